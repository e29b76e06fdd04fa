//! Fuzzes route and owner parsing: whatever the bytes, parsing never panics, and every route
//! it accepts keeps `lazygate::route::assert_invariants`. Run with scripts/fuzz.sh.
#![no_main]

use http::{Method, Uri};
use lazygate::owner::{MAX_OWNER_LEN, OwnerHash, decode_owner};
use lazygate::route::{assert_invariants, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(owner) = decode_owner(text) {
        assert!(!owner.is_empty() && owner.len() <= MAX_OWNER_LEN);
        assert!(!owner.contains(['/', '\\']) && !owner.chars().any(char::is_control));
    }
    if let Ok(hash) = OwnerHash::parse(text) {
        assert_eq!(hash.as_str(), text);
    }
    let Ok(uri) = text.parse::<Uri>() else { return };
    for method in [Method::GET, Method::POST, Method::DELETE] {
        if let Ok(route) = parse(&method, &uri) {
            assert_invariants(&route);
        }
    }
});
