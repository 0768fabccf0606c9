//! A MaxMind DB file, as `GeoIp` reads it, looked up at a few addresses. Inputs starting with
//! `P` patch a valid database (made by `reputation::mmdb::write`) at the offsets they give,
//! so that mutations land inside a well-formed tree, data section and metadata; others are
//! read as the whole file.
#![no_main]
use audithound::reputation::{mmdb, Geo, GeoIp};
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use std::sync::OnceLock;

fn valid() -> &'static [u8] {
    static DB: OnceLock<Vec<u8>> = OnceLock::new();
    DB.get_or_init(|| {
        let geo = |asn, org: &str, country: &str| Geo {
            asn: Some(asn),
            as_org: Some(org.into()),
            country: Some(country.into()),
        };
        mmdb::write(&[
            (
                "198.51.100.0/24".parse().unwrap(),
                geo(64500, "Example", "NL"),
            ),
            ("203.0.113.0/25".parse().unwrap(), geo(64501, "Other", "DE")),
            ("2001:db8::/32".parse().unwrap(), geo(64502, "Six", "FR")),
        ])
    })
}

fuzz_target!(|data: &[u8]| {
    let bytes = match data.split_first() {
        Some((b'P', patches)) => {
            let mut db = valid().to_vec();
            for patch in patches.chunks_exact(3) {
                let at = usize::from(u16::from_le_bytes([patch[0], patch[1]])) % db.len();
                db[at] = patch[2];
            }
            db
        }
        _ => data.to_vec(),
    };
    let Ok(reader) = maxminddb::Reader::from_source(bytes) else {
        return;
    };
    let geoip = GeoIp::Db(reader);
    let _ = format!("{geoip:?}");
    for probe in [
        "198.51.100.7",
        "203.0.113.200",
        "2001:db8::1",
        "::ffff:198.51.100.9",
        "10.0.0.1",
    ] {
        let _ = geoip.lookup(probe.parse::<IpAddr>().unwrap());
    }
});
