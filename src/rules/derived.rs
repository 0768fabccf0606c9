//! Field names for values the event holds only in encoded form (`execCommand`, `csr.*`), which
//! `event::derived` decodes, and for what the run's enrichment says of its source addresses
//! (`sourceIP.*`, see `reputation`).

/// Which derived value a field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Derived {
    /// `execCommand`: the exec'd command and its arguments, joined by spaces.
    ExecCommand,
    /// `csr.commonName`: the CN of the subject a CSR requests (the username it would carry).
    CsrCommonName,
    /// `csr.organizations`: its O values (the groups it would carry, e.g. `system:masters`).
    CsrOrganizations,
    /// `sourceIP.lists`: the names of the IP lists (`--ip-list`, `[reputation]`) any source
    /// address is on.
    SourceLists,
    /// `sourceIP.asn`: each source address's autonomous system number (`--geoip`).
    SourceAsn,
    /// `sourceIP.asOrg`: the organisation of that autonomous system.
    SourceAsOrg,
    /// `sourceIP.country`: its ISO 3166 country code.
    SourceCountry,
}

pub const NAMES: &[(&str, Derived)] = &[
    ("execCommand", Derived::ExecCommand),
    ("csr.commonName", Derived::CsrCommonName),
    ("csr.organizations", Derived::CsrOrganizations),
    ("sourceIP.lists", Derived::SourceLists),
    ("sourceIP.asn", Derived::SourceAsn),
    ("sourceIP.asOrg", Derived::SourceAsOrg),
    ("sourceIP.country", Derived::SourceCountry),
];
