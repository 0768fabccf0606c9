//! Source reputation: named IP lists (Tor exits, a threat feed, your own) and a MaxMind-format
//! database (ASN, AS organisation, country). Together they are the `Enrichment` that rules read
//! through the `sourceIP.lists`, `sourceIP.asn`, `sourceIP.asOrg` and `sourceIP.country` fields;
//! `EventView` looks an event's source addresses up at most once, and only when a rule asks.
//!
//! A list file holds one IP address or CIDR a line, `#` comments and blank lines allowed; a CSV
//! file the same in its first column, with an optional header. A line that is neither is an
//! error naming the file and line. `live` keeps the lists and the database current while a
//! service runs (a bad edit keeps the previous version).

use ipnet::IpNet;
use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod live;
pub mod mmdb;
pub use live::LiveReputation;

/// A set of addresses and networks, as sorted, merged ranges of 128-bit addresses (IPv4 as
/// IPv4-mapped IPv6): a lookup is a binary search, whatever the list's size.
#[derive(Debug, Default, Clone)]
pub struct IpList {
    ranges: Vec<(u128, u128)>,
    entries: usize,
}

/// An address in the one 128-bit space: IPv4 as `::ffff:a.b.c.d`.
fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(v4.to_ipv6_mapped()),
            None => u128::from(v6),
        },
    }
}

/// The first and last address of a network in the same space.
fn span(net: IpNet) -> (u128, u128) {
    let (start, len) = match net {
        IpNet::V4(n) => (
            u128::from(n.network().to_ipv6_mapped()),
            96 + u32::from(n.prefix_len()),
        ),
        IpNet::V6(n) => (u128::from(n.network()), u32::from(n.prefix_len())),
    };
    let host = u128::MAX.checked_shr(len).unwrap_or(0);
    (start, start | host)
}

/// An address or a network (`203.0.113.5`, `203.0.113.0/24`, `2001:db8::/32`).
pub fn parse_net(text: &str) -> Option<IpNet> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Some(net.trunc());
    }
    text.parse::<IpAddr>().ok().map(IpNet::from)
}

impl IpList {
    pub fn from_nets(nets: impl IntoIterator<Item = IpNet>) -> IpList {
        let mut ranges: Vec<(u128, u128)> = nets.into_iter().map(span).collect();
        let entries = ranges.len();
        ranges.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        IpList {
            ranges: merged,
            entries,
        }
    }

    /// A list's text; `origin` (the file's name) prefixes errors, with the line number.
    pub fn parse(text: &str, origin: &str) -> Result<IpList, String> {
        let mut nets = Vec::new();
        let mut first = true;
        let csv_file = origin.to_ascii_lowercase().ends_with(".csv");
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let csv = csv_file || line.contains(',');
            let cell = line
                .split(',')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('"');
            match parse_net(cell) {
                Some(net) => nets.push(net),
                // A CSV file may start with a header.
                None if first && csv => {}
                None => {
                    return Err(format!(
                        "{origin}:{}: not an IP address or CIDR: {cell:?}",
                        n + 1
                    ))
                }
            }
            first = false;
        }
        Ok(IpList::from_nets(nets))
    }

    pub fn load(path: &Path) -> Result<IpList, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        IpList::parse(&text, &path.display().to_string())
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let at = bits(ip);
        let i = self.ranges.partition_point(|r| r.1 < at);
        self.ranges.get(i).is_some_and(|r| r.0 <= at)
    }

    /// How many lines (addresses or networks) it was made of.
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }
}

/// What the database (or a test's table) says of an address.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Geo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_org: Option<String>,
    /// ISO 3166 code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// One address's answer, borrowing from the enrichment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GeoRef<'e> {
    pub asn: Option<u32>,
    pub as_org: Option<&'e str>,
    pub country: Option<&'e str>,
}

/// The fields of the GeoLite2/GeoIP2 ASN, Country and City databases that rules read (the others
/// are skipped unread).
#[derive(Deserialize)]
struct MmdbRecord<'a> {
    #[serde(default)]
    autonomous_system_number: Option<u32>,
    #[serde(default, borrow)]
    autonomous_system_organization: Option<&'a str>,
    #[serde(default, borrow)]
    country: Option<MmdbCountry<'a>>,
    #[serde(default, borrow)]
    registered_country: Option<MmdbCountry<'a>>,
}

#[derive(Deserialize)]
struct MmdbCountry<'a> {
    #[serde(default, borrow)]
    iso_code: Option<&'a str>,
}

/// Where ASN and country come from: a MaxMind-format database, or a table (rule tests).
pub enum GeoIp {
    Db(maxminddb::Reader<Vec<u8>>),
    Table(Vec<(IpNet, Geo)>),
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GeoIp::Db(r) => write!(f, "GeoIp::Db({})", r.metadata().database_type),
            GeoIp::Table(t) => write!(f, "GeoIp::Table({} networks)", t.len()),
        }
    }
}

impl GeoIp {
    /// A MaxMind DB file (GeoLite2-ASN, -Country, -City, or any database with their keys).
    pub fn open(path: &Path) -> Result<GeoIp, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let reader = maxminddb::Reader::from_source(bytes)
            .map_err(|e| format!("{}: not a MaxMind DB file: {e}", path.display()))?;
        Ok(GeoIp::Db(reader))
    }

    pub fn lookup(&self, ip: IpAddr) -> Option<GeoRef<'_>> {
        match self {
            GeoIp::Db(reader) => {
                // An IPv4-mapped address is looked up as IPv4 (an IPv4-only database refuses
                // IPv6, and IPv6 ones keep IPv4 in their own subtree).
                let ip = match ip {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                    v4 => v4,
                };
                let found = reader.lookup(ip).ok()?;
                let record: MmdbRecord = found.decode().ok()??;
                let country = record
                    .country
                    .and_then(|c| c.iso_code)
                    .or_else(|| record.registered_country.and_then(|c| c.iso_code));
                let geo = GeoRef {
                    asn: record.autonomous_system_number,
                    as_org: record.autonomous_system_organization,
                    country,
                };
                (geo != GeoRef::default()).then_some(geo)
            }
            GeoIp::Table(table) => {
                // The most specific network holding the address.
                let (_, geo) = table
                    .iter()
                    .filter(|(net, _)| net.contains(&ip))
                    .max_by_key(|(net, _)| net.prefix_len())?;
                Some(GeoRef {
                    asn: geo.asn,
                    as_org: geo.as_org.as_deref(),
                    country: geo.country.as_deref(),
                })
            }
        }
    }
}

/// The named lists and the database in force, as workers see them (a snapshot per batch).
#[derive(Debug, Default, Clone)]
pub struct Enrichment {
    lists: Vec<(String, Arc<IpList>)>,
    geoip: Option<Arc<GeoIp>>,
}

/// What an event's source address is, borrowing names from the enrichment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SourceInfo<'e> {
    /// The names of the lists the address is on.
    pub lists: Vec<&'e str>,
    pub geo: Option<GeoRef<'e>>,
}

impl Enrichment {
    pub fn new(lists: Vec<(String, Arc<IpList>)>, geoip: Option<Arc<GeoIp>>) -> Enrichment {
        Enrichment { lists, geoip }
    }

    /// Lists given inline (`name → [address or CIDR…]`), and a table for ASN and country: what a
    /// rule's tests use.
    pub fn inline(
        lists: &std::collections::BTreeMap<String, Vec<String>>,
        geo: &std::collections::BTreeMap<String, Geo>,
    ) -> Result<Enrichment, String> {
        let net = |text: &str| {
            parse_net(text).ok_or_else(|| format!("not an IP address or CIDR: {text:?}"))
        };
        let lists = lists
            .iter()
            .map(|(name, items)| {
                let nets = items
                    .iter()
                    .map(|i| net(i))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("ip_lists.{name}: {e}"))?;
                Ok((name.clone(), Arc::new(IpList::from_nets(nets))))
            })
            .collect::<Result<_, String>>()?;
        let table = geo
            .iter()
            .map(|(k, g)| Ok((net(k).map_err(|e| format!("geoip: {e}"))?, g.clone())))
            .collect::<Result<Vec<_>, String>>()?;
        let geoip = (!table.is_empty()).then(|| Arc::new(GeoIp::Table(table)));
        Ok(Enrichment { lists, geoip })
    }

    pub fn is_empty(&self) -> bool {
        self.lists.is_empty() && self.geoip.is_none()
    }

    pub fn lists(&self) -> impl Iterator<Item = (&str, &IpList)> {
        self.lists.iter().map(|(n, l)| (n.as_str(), &**l))
    }

    pub fn geoip(&self) -> Option<&Arc<GeoIp>> {
        self.geoip.as_ref()
    }

    /// What is known of one source address given as text (`None` for text that is no address:
    /// `gce-internal-ip`, `private`).
    pub fn source(&self, text: &str) -> Option<SourceInfo<'_>> {
        let ip: IpAddr = text.trim().parse().ok()?;
        Some(SourceInfo {
            lists: self
                .lists
                .iter()
                .filter(|(_, l)| l.contains(ip))
                .map(|(n, _)| n.as_str())
                .collect(),
            geo: self.geoip.as_ref().and_then(|g| g.lookup(ip)),
        })
    }
}

/// Where the lists and the database come from: the service's `[reputation]` section, or
/// `--ip-list NAME=FILE` and `--geoip FILE`.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub lists: Vec<(String, PathBuf)>,
    pub geoip: Option<PathBuf>,
}

impl Sources {
    pub fn is_empty(&self) -> bool {
        self.lists.is_empty() && self.geoip.is_none()
    }

    /// `NAME=FILE`, as `--ip-list` takes it.
    pub fn parse_list_arg(arg: &str) -> Result<(String, PathBuf), String> {
        match arg.split_once('=') {
            Some((name, path)) if valid_name(name) && !path.is_empty() => {
                Ok((name.to_owned(), PathBuf::from(path)))
            }
            _ => Err(format!(
                "{arg:?}: expected NAME=FILE, NAME of letters, digits, '-' and '_' (e.g. tor=/etc/audithound/tor-exits.txt)"
            )),
        }
    }
}

/// A list's name, as rules write it (`sourceIP.lists: tor`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_read_plain_and_csv_and_name_the_bad_line() {
        let plain = "# Tor exits\n203.0.113.5\n\n198.51.100.0/24  # a range\n2001:db8::/32\n";
        let list = IpList::parse(plain, "tor.txt").unwrap();
        assert_eq!(list.len(), 3);
        for hit in [
            "203.0.113.5",
            "198.51.100.77",
            "2001:db8::1",
            "::ffff:203.0.113.5",
        ] {
            assert!(list.contains(hit.parse().unwrap()), "{hit}");
        }
        for miss in ["203.0.113.6", "198.51.101.1", "2001:db9::1", "10.0.0.1"] {
            assert!(!list.contains(miss.parse().unwrap()), "{miss}");
        }
        let csv =
            "ip,first_seen,source\n\"192.0.2.1\",2025-01-01,feed\n192.0.2.128/25,2025-01-02,feed\n";
        let list = IpList::parse(csv, "threat.csv").unwrap();
        assert_eq!(list.len(), 2);
        assert!(list.contains("192.0.2.200".parse().unwrap()));
        assert!(!list.contains("192.0.2.2".parse().unwrap()));
        // Without a header too, and one column with one.
        assert_eq!(IpList::parse("192.0.2.1,x\n", "a.csv").unwrap().len(), 1);
        assert_eq!(IpList::parse("ip\n192.0.2.1\n", "a.csv").unwrap().len(), 1);
        assert!(IpList::parse("ip\n192.0.2.1\n", "a.txt").is_err());

        let err = IpList::parse("203.0.113.5\n\nnot-an-ip\n", "tor.txt").unwrap_err();
        assert_eq!(err, "tor.txt:3: not an IP address or CIDR: \"not-an-ip\"");
        let err = IpList::parse("ip,x\n1.2.3.4,y\nbad,z\n", "t.csv").unwrap_err();
        assert!(err.starts_with("t.csv:3:"), "{err}");
        assert!(IpList::parse("", "empty.txt").unwrap().is_empty());
    }

    #[test]
    fn overlapping_networks_merge() {
        let list = IpList::parse("10.0.0.0/8\n10.1.0.0/16\n11.0.0.0/8\n0.0.0.0/0\n", "x").unwrap();
        assert!(list.contains("200.1.1.1".parse().unwrap()));
        assert!(!list.contains("2001:db8::1".parse().unwrap()));
        let all = IpList::parse("::/0\n", "x").unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
    }

    #[test]
    fn an_mmdb_file_gives_asn_organisation_and_country() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("geo.mmdb");
        std::fs::write(
            &path,
            mmdb::write(&[
                (
                    "203.0.113.0/24".parse().unwrap(),
                    Geo {
                        asn: Some(64500),
                        as_org: Some("Example Transit".into()),
                        country: Some("NL".into()),
                    },
                ),
                (
                    "198.51.100.0/25".parse().unwrap(),
                    Geo {
                        asn: Some(64501),
                        as_org: None,
                        country: None,
                    },
                ),
            ]),
        )
        .unwrap();
        let geoip = GeoIp::open(&path).unwrap();
        let at = |ip: &str| geoip.lookup(ip.parse().unwrap());
        assert_eq!(
            at("203.0.113.9"),
            Some(GeoRef {
                asn: Some(64500),
                as_org: Some("Example Transit"),
                country: Some("NL")
            })
        );
        assert_eq!(at("::ffff:203.0.113.9").and_then(|g| g.asn), Some(64500));
        assert_eq!(at("198.51.100.1").and_then(|g| g.asn), Some(64501));
        assert_eq!(at("198.51.100.200"), None);
        assert_eq!(at("2001:db8::1"), None);
        let err = std::fs::write(&path, b"not a database").map(|_| GeoIp::open(&path));
        assert!(err.unwrap().is_err());
    }

    #[test]
    fn an_enrichment_names_lists_and_skips_what_is_no_address() {
        let lists = [
            ("tor".to_string(), vec!["203.0.113.5/32".to_string()]),
            ("threat".to_string(), vec!["203.0.113.0/24".to_string()]),
        ]
        .into_iter()
        .collect();
        let geo = [(
            "203.0.113.0/24".to_string(),
            Geo {
                asn: Some(64500),
                ..Geo::default()
            },
        )]
        .into_iter()
        .collect();
        let e = Enrichment::inline(&lists, &geo).unwrap();
        let info = e.source("203.0.113.5").unwrap();
        assert_eq!(info.lists, ["threat", "tor"]);
        assert_eq!(info.geo.and_then(|g| g.asn), Some(64500));
        assert!(e.source("gce-internal-ip").is_none());
        assert!(e.source("10.0.0.1").unwrap().lists.is_empty());
        assert!(Sources::parse_list_arg("tor=/x.txt").is_ok());
        assert!(Sources::parse_list_arg("to r=/x.txt").is_err());
        assert!(Sources::parse_list_arg("/x.txt").is_err());
    }
}
