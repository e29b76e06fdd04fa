//! Fuzzes route and owner parsing: whatever the bytes, parsing never panics, and a route it
//! accepts never forwards a dot segment or an encoded separator, and names a well-formed
//! owner. Run with scripts/fuzz.sh.
#![no_main]

use http::{Method, Uri};
use lazygate::owner::{MAX_OWNER_LEN, OwnerHash, decode_owner};
use lazygate::route::{Route, parse};
use libfuzzer_sys::fuzz_target;

fn check_rest(rest: &str) {
    assert!(rest.starts_with('/'));
    let path = rest.split('?').next().unwrap_or_default();
    for segment in path.split('/') {
        let decoded: Vec<u8> = percent_decode(segment);
        assert!(decoded != b"." && decoded != b"..", "dot segment forwarded: {rest}");
        assert!(!decoded.contains(&b'\\') && !decoded.contains(&b'/'), "separator forwarded: {rest}");
    }
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

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
        match parse(&method, &uri) {
            Ok(Route::View { rest, .. }) => check_rest(&rest),
            Ok(Route::Rpc { owner, owner_hash, rest }) | Ok(Route::Cdp { owner, owner_hash, rest }) => {
                assert_eq!(owner_hash, OwnerHash::of(&owner));
                check_rest(&rest);
            }
            _ => {}
        }
    }
});
