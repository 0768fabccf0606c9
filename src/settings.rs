//! Values read from configuration files. Strings expand `${VAR}` from the environment and
//! `${file:/path}` from a file (its content, trailing newline removed), so tokens come from a
//! Kubernetes Secret instead of the ConfigMap; a variable or file that is missing is an error at
//! load, with the key's place. Secrets never print: their `Debug` is `***`.

use serde::{Deserialize, Deserializer};
use std::fmt;

/// A configuration string, expanded when read.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Text(pub String);

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        expand(&raw, &|name| std::env::var(name).ok())
            .map(Text)
            .map_err(serde::de::Error::custom)
    }
}

/// A configuration string that must not be shown: a token, a password, a header value.
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Secret(Text);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(Text(value.into()))
    }

    /// The value itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// A secret given inline or, with `file`, read from a file (trailing newline removed).
pub fn secret_from(
    inline: Option<&Secret>,
    file: Option<&std::path::Path>,
    key: &str,
) -> Result<Option<Secret>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!("{key} and {key}_file: give one of them")),
        (Some(s), None) => Ok(Some(s.clone())),
        (None, Some(path)) => read_secret(path)
            .map(|s| Some(Secret::new(s)))
            .map_err(|e| format!("{key}_file: {e}")),
        (None, None) => Ok(None),
    }
}

fn read_secret(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

/// `${VAR}` and `${file:PATH}` replaced; `$$` is a literal `$`.
pub fn expand(raw: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        let Some(body) = rest.strip_prefix('{') else {
            out.push('$');
            continue;
        };
        let Some(end) = body.find('}') else {
            return Err(format!("unclosed \"${{\" in {raw:?}"));
        };
        let name = &body[..end];
        rest = &body[end + 1..];
        let value = match name.strip_prefix("file:") {
            Some(path) => read_secret(std::path::Path::new(path))?,
            None if valid_name(name) => env(name).ok_or_else(|| {
                format!("environment variable {name} is not set (referenced as ${{{name}}})")
            })?,
            None => return Err(format!("\"${{{name}}}\" is not a variable name")),
        };
        out.push_str(&value);
    }
    out.push_str(rest);
    Ok(out)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_variables_and_files_and_refuses_missing_ones() {
        let env = |name: &str| (name == "TOKEN").then(|| "s3cret".to_string());
        assert_eq!(expand("Splunk ${TOKEN}", &env).unwrap(), "Splunk s3cret");
        assert_eq!(expand("cost $$5, $x", &env).unwrap(), "cost $5, $x");
        assert!(expand("${NOPE}", &env)
            .unwrap_err()
            .contains("NOPE is not set"));
        assert!(expand("${TOKEN", &env).is_err());
        assert!(expand("${a b}", &env).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").unwrap();
        let text = format!("Bearer ${{file:{}}}", path.display());
        assert_eq!(expand(&text, &env).unwrap(), "Bearer from-file");
        assert!(expand("${file:/does/not/exist}", &env).is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "\"***\"");
        assert_eq!(s.expose(), "hunter2");
    }
}
