//! A JSONSocket header from the network: as one datagram, and as a byte stream cut
//! into pieces at the places the input's first bytes choose. The stream scan must find
//! the same end as a scan of the whole, and parsing must agree.

#![no_main]

use l7mp::protocol::json_header::{self, HeaderScan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (cuts, message) = data.split_at(data.len().min(4));
    if let Ok(header) = json_header::parse(message) {
        let _ = json_header::validate(&header);
    }
    let whole = HeaderScan::default().feed(message);
    let mut scan = HeaderScan::default();
    let mut got = Ok(None);
    let mut at = 0;
    for cut in cuts.iter().map(|c| usize::from(*c)).chain([message.len()]) {
        at = (at + cut).min(message.len());
        got = scan.feed(&message[..at]);
        if !matches!(got, Ok(None)) {
            break;
        }
    }
    if let (Ok(Some(a)), Ok(Some(b))) = (&whole, &got) {
        assert_eq!(a, b, "the stream scan ends where the whole scan does");
    }
    assert_eq!(whole.is_err(), got.is_err(), "{whole:?} vs {got:?}");
});
