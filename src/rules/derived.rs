//! Field names for values the event holds only in encoded form (`execCommand`, `csr.*`);
//! `event::derived` decodes them.

/// Which derived value a field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Derived {
    /// `execCommand`: the exec'd command and its arguments, joined by spaces.
    ExecCommand,
    /// `csr.commonName`: the CN of the subject a CSR requests (the username it would carry).
    CsrCommonName,
    /// `csr.organizations`: its O values (the groups it would carry, e.g. `system:masters`).
    CsrOrganizations,
}

pub const NAMES: &[(&str, Derived)] = &[
    ("execCommand", Derived::ExecCommand),
    ("csr.commonName", Derived::CsrCommonName),
    ("csr.organizations", Derived::CsrOrganizations),
];
