//! Summary templates: `"{user.username} bound {requestObject.roleRef.name}"`, with field paths
//! checked when the rule loads.

use super::field::Field;
use crate::event::EventView;

#[derive(Debug)]
enum Piece {
    Text(String),
    Field(Field),
}

#[derive(Debug)]
pub struct Template {
    pieces: Vec<Piece>,
    source: String,
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let Some(len) = rest[open..].find('}') else {
                return Err(format!("unclosed '{{' in {s:?}"));
            };
            pieces.push(Piece::Field(Field::parse(&rest[open + 1..open + len])?));
            rest = &rest[open + len + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Template {
            pieces,
            source: s.to_owned(),
        })
    }

    /// Whether the template is exactly this text (`"{user.username}"`: the actor).
    pub fn is(&self, text: &str) -> bool {
        self.source == text
    }

    /// Fills the template; a field with no value reads as `(none)`.
    pub fn render(&self, ev: &EventView) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(f) => {
                    out.push_str(&f.first_text(ev).unwrap_or_else(|| "(none)".into()))
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::AuditEvent;

    #[test]
    fn renders_fields_and_reports_bad_ones() {
        let ev: AuditEvent =
            serde_json::from_str(r#"{"verb":"get","user":{"username":"bob"}}"#).unwrap();
        let t = Template::parse("{user.username} did {verb} on {objectRef.name}.").unwrap();
        assert_eq!(t.render(&EventView::new(&ev, 0)), "bob did get on (none).");
        assert!(Template::parse("{user.nope}").is_err());
        assert!(Template::parse("{verb").is_err());
    }
}
