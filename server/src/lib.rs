//! Sigil server library.
