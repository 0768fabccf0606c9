//! Writes a small MaxMind DB file (format 2.0: a binary search tree of 24-bit records, a data
//! section, metadata), holding the keys of the GeoLite2 ASN and Country databases. For tests
//! and samples: real databases come from MaxMind (`geoipupdate`); no network is needed to test
//! against this one.

use super::Geo;
use ipnet::IpNet;

#[derive(Clone, Copy)]
enum Record {
    Empty,
    Node(u32),
    Data(u32),
}

/// The database's bytes: an IPv6 tree with IPv4 networks in `::/96`, as MaxMind lays them out.
pub fn write(entries: &[(IpNet, Geo)]) -> Vec<u8> {
    let mut data = Vec::new();
    let mut nodes: Vec<[Record; 2]> = vec![[Record::Empty; 2]];
    for (net, geo) in entries {
        let offset = data.len() as u32;
        write_geo(&mut data, geo);
        let (addr, len) = match net {
            IpNet::V4(n) => (u128::from(u32::from(n.network())), 96 + n.prefix_len()),
            IpNet::V6(n) => (u128::from(n.network()), n.prefix_len()),
        };
        let bit = |depth: u8| ((addr >> (127 - depth)) & 1) as usize;
        let mut node = 0usize;
        for depth in 0..len.saturating_sub(1) {
            let b = bit(depth);
            node = match nodes[node][b] {
                Record::Node(n) => n as usize,
                // A shorter network already here: both halves keep its data.
                other => {
                    let inherited = match other {
                        Record::Data(d) => Record::Data(d),
                        _ => Record::Empty,
                    };
                    nodes.push([inherited; 2]);
                    let n = nodes.len() - 1;
                    nodes[node][b] = Record::Node(n as u32);
                    n
                }
            };
        }
        nodes[node][bit(len.saturating_sub(1))] = Record::Data(offset);
    }
    let count = nodes.len() as u32;
    let mut out = Vec::with_capacity(nodes.len() * 6 + data.len() + 256);
    for pair in &nodes {
        for rec in pair {
            let v = match *rec {
                Record::Empty => count,
                Record::Node(n) => n,
                Record::Data(d) => count + 16 + d,
            };
            out.extend_from_slice(&v.to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    map(&mut out, 9);
    string(&mut out, "binary_format_major_version");
    uint(&mut out, 5, 2);
    string(&mut out, "binary_format_minor_version");
    uint(&mut out, 5, 0);
    string(&mut out, "build_epoch");
    out.extend_from_slice(&[0x08, 9 - 7]); // uint64, 8 bytes
    out.extend_from_slice(&1_735_689_600u64.to_be_bytes());
    string(&mut out, "database_type");
    string(&mut out, "audithound-Test-ASN-Country");
    string(&mut out, "description");
    map(&mut out, 1);
    string(&mut out, "en");
    string(&mut out, "Test database written by audithound");
    string(&mut out, "ip_version");
    uint(&mut out, 5, 6);
    string(&mut out, "languages");
    out.extend_from_slice(&[0x01, 11 - 7]); // array of one
    string(&mut out, "en");
    string(&mut out, "node_count");
    uint(&mut out, 6, count);
    string(&mut out, "record_size");
    uint(&mut out, 5, 24);
    out
}

fn write_geo(out: &mut Vec<u8>, geo: &Geo) {
    let n = [
        geo.asn.is_some(),
        geo.as_org.is_some(),
        geo.country.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    map(out, n);
    if let Some(asn) = geo.asn {
        string(out, "autonomous_system_number");
        uint(out, 6, asn);
    }
    if let Some(org) = &geo.as_org {
        string(out, "autonomous_system_organization");
        string(out, org);
    }
    if let Some(country) = &geo.country {
        string(out, "country");
        map(out, 1);
        string(out, "iso_code");
        string(out, country);
    }
}

fn map(out: &mut Vec<u8>, pairs: usize) {
    out.push(7 << 5 | pairs as u8);
}

/// A UTF-8 string (type 2) of fewer than 285 bytes (longer ones are cut).
fn string(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(284)];
    if bytes.len() < 29 {
        out.push(2 << 5 | bytes.len() as u8);
    } else {
        out.push(2 << 5 | 29);
        out.push((bytes.len() - 29) as u8);
    }
    out.extend_from_slice(bytes);
}

/// An unsigned integer of type 5 (uint16) or 6 (uint32), in as few bytes as it needs.
fn uint(out: &mut Vec<u8>, kind: u8, v: u32) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    out.push(kind << 5 | (4 - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}
