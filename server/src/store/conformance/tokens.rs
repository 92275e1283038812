//! Conformance checks for join tokens: single use, expiry, pruning.

use super::fixtures::*;
use super::*;

/// Tokens are single use, expire (at `expires_at` itself), and pruning
/// removes only expired ones.
pub fn join_tokens(location: &dyn StoreLocation) {
    let store = location.open();
    let s = &*store;
    expect_not_found(s.consume_join_token("nope", 1500), "consume unknown token");

    ok(s.create_join_token(token("h1", 2000)), "create h1");
    expect_already_exists(
        s.create_join_token(token("h1", 9000)),
        "create with a hash already stored",
    );
    assert_eq!(
        ok(s.consume_join_token("h1", 1500), "consume h1"),
        token("h1", 2000),
        "consume returns the token as created (a duplicate create must not overwrite it)"
    );
    expect_not_found(s.consume_join_token("h1", 1500), "second consume of h1");

    ok(s.create_join_token(token("h2", 1000)), "create expired h2");
    expect_err(
        s.consume_join_token("h2", 1500),
        "consume of an expired token",
        "TokenExpired",
        |e| matches!(e, StoreError::TokenExpired),
    );
    expect_not_found(
        s.consume_join_token("h2", 1500),
        "consume of an expired token after TokenExpired (it is removed)",
    );

    ok(s.create_join_token(token("h3", 1500)), "create h3");
    expect_err(
        s.consume_join_token("h3", 1500),
        "consume at the expiry second",
        "TokenExpired",
        |e| matches!(e, StoreError::TokenExpired),
    );

    ok(s.create_join_token(token("p1", 1000)), "create p1");
    ok(s.create_join_token(token("p2", 1500)), "create p2");
    ok(s.create_join_token(token("p3", 1501)), "create p3");
    ok(s.create_join_token(token("p4", 9000)), "create p4");
    assert_eq!(
        ok(s.prune_join_tokens(1500), "prune at 1500"),
        2,
        "prune removes exactly the expired tokens"
    );
    assert_eq!(ok(s.prune_join_tokens(1500), "prune again"), 0);
    expect_not_found(s.consume_join_token("p1", 1400), "consume pruned p1");
    expect_not_found(s.consume_join_token("p2", 1400), "consume pruned p2");
    assert_eq!(
        ok(s.consume_join_token("p3", 1500), "consume unexpired p3"),
        token("p3", 1501)
    );
    ok(s.consume_join_token("p4", 1500), "consume unexpired p4");
}
