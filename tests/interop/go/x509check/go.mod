module sigil.invalid/x509check

go 1.19
