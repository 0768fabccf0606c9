//! An IP list's text (one address or CIDR a line, or CSV; the first byte picks the file name's
//! extension) through `IpList::parse`: every network a line names is in the merged list, its
//! first and last address included.
#![no_main]
use audithound::reputation::{parse_net, IpList};
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let origin = if kind % 2 == 0 {
        "fuzz.txt"
    } else {
        "fuzz.csv"
    };
    let Ok(list) = IpList::parse(text, origin) else {
        return;
    };
    assert!(list.len() <= text.lines().count());
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let cell = line
            .split(',')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        if let Some(net) = parse_net(cell) {
            for ip in [net.network(), net.broadcast()] {
                assert!(
                    list.contains(ip),
                    "{net} parsed but {ip} is not in the list"
                );
            }
        }
    }
    for probe in [
        "0.0.0.0",
        "255.255.255.255",
        "::",
        "::ffff:1.2.3.4",
        "2001:db8::1",
    ] {
        let _ = list.contains(probe.parse::<IpAddr>().unwrap());
    }
});
