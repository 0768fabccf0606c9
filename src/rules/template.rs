//! Summary templates: `"{user.username} bound {requestObject.roleRef.name}[ from {sourceIPs}]"`.
//!
//! `{path}` is a field of the event, checked when the rule loads; `{a|b}` is the first of several
//! that has a value (`{objectRef.name|requestObject.metadata.name}`). `[...]` is an optional part:
//! it is left out when a field or value inside it has none, so that a summary never reads
//! "(none)". Stateful kinds offer values of their own (`{count}`, `{revoked_at}`…), named in
//! `rules::kind::Kind::values`.

use super::field::Field;
use crate::event::EventView;

#[derive(Debug)]
enum Piece {
    Text(String),
    /// A field of the event (the first of `a|b|…` that has a value), and its path as written.
    Field(Vec<Field>, String),
    /// A value the rule's kind supplies when it fires.
    Value(String),
    Optional(Vec<Piece>),
}

#[derive(Debug)]
pub struct Template {
    pieces: Vec<Piece>,
    source: String,
}

/// Values a detector offers a template beside the event's fields.
pub type Values<'a> = &'a [(&'a str, String)];

impl Template {
    /// Parses `s`; `values` are the names the rule's kind supplies beside the event's fields.
    pub fn parse(s: &str, values: &[&str]) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut optional: Option<Vec<Piece>> = None;
        let mut text = String::new();
        let mut rest = s;
        let flush = |text: &mut String, into: &mut Vec<Piece>| {
            if !text.is_empty() {
                into.push(Piece::Text(std::mem::take(text)));
            }
        };
        while let Some(c) = rest.chars().next() {
            rest = &rest[c.len_utf8()..];
            match c {
                '{' => {
                    let Some(len) = rest.find('}') else {
                        return Err(format!("unclosed '{{' in {s:?}"));
                    };
                    let name = &rest[..len];
                    let piece = if values.contains(&name) {
                        Piece::Value(name.to_owned())
                    } else {
                        let fields = alternatives(name)
                            .map(|path| {
                                Field::parse(path.trim()).map_err(|e| {
                                    if values.is_empty() {
                                        e
                                    } else {
                                        format!("{e} (this kind also offers {})", values.join(", "))
                                    }
                                })
                            })
                            .collect::<Result<_, _>>()?;
                        Piece::Field(fields, name.to_owned())
                    };
                    let into = optional.as_mut().unwrap_or(&mut pieces);
                    flush(&mut text, into);
                    into.push(piece);
                    rest = &rest[len + 1..];
                }
                '[' if optional.is_some() => {
                    return Err(format!("optional parts do not nest, in {s:?}"))
                }
                '[' => {
                    flush(&mut text, &mut pieces);
                    optional = Some(Vec::new());
                }
                ']' => match optional.take() {
                    Some(mut group) => {
                        flush(&mut text, &mut group);
                        pieces.push(Piece::Optional(group));
                    }
                    None => return Err(format!("']' without '[' in {s:?}")),
                },
                c => text.push(c),
            }
        }
        if optional.is_some() {
            return Err(format!("unclosed '[' in {s:?}"));
        }
        flush(&mut text, &mut pieces);
        Ok(Template {
            pieces,
            source: s.to_owned(),
        })
    }

    /// Whether the template is exactly this text (`"{user.username}"`: the actor).
    pub fn is(&self, text: &str) -> bool {
        self.source == text
    }

    /// Fills the template from the event and the kind's `values`. An optional part with an
    /// empty field or value is left out; elsewhere an empty one reads as nothing.
    pub fn render(&self, ev: &EventView, values: Values) -> String {
        let mut out = String::new();
        render_pieces(&self.pieces, ev, values, &mut out);
        out
    }

    /// Whether every field and value outside optional parts has a value on this event: a
    /// summary that reads as a whole sentence.
    pub fn complete(&self, ev: &EventView, values: Values) -> bool {
        self.missing(ev, values).is_none()
    }

    /// The first field or value outside optional parts that has no value on this event.
    pub fn missing(&self, ev: &EventView, values: Values) -> Option<String> {
        self.pieces.iter().find_map(|p| match p {
            Piece::Optional(_) | Piece::Text(_) => None,
            Piece::Value(name) => piece_text(p, ev, values)
                .is_none()
                .then(|| format!("{{{name}}}")),
            Piece::Field(_, name) => piece_text(p, ev, values)
                .is_none()
                .then(|| format!("{{{name}}}")),
        })
    }
}

/// `a|b|c` split at the bars outside parentheses (`(containers|initContainers)` is one path).
fn alternatives(name: &str) -> impl Iterator<Item = &str> {
    let mut depth = 0i32;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, c) in name.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            '|' if depth == 0 => {
                parts.push(&name[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&name[start..]);
    parts.into_iter()
}

/// The text of a field or value; None when it has none (or only empty text).
fn piece_text(piece: &Piece, ev: &EventView, values: Values) -> Option<String> {
    let text = match piece {
        Piece::Text(t) => Some(t.clone()),
        Piece::Field(alternatives, _) => alternatives.iter().find_map(|f| {
            let all = f.all_text(ev);
            (!all.is_empty()).then(|| all.join(", "))
        }),
        Piece::Value(name) => values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone()),
        Piece::Optional(_) => None,
    };
    text.filter(|t| !t.is_empty())
}

fn render_pieces(pieces: &[Piece], ev: &EventView, values: Values, out: &mut String) {
    for p in pieces {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Optional(group) => {
                let texts: Option<Vec<String>> =
                    group.iter().map(|p| piece_text(p, ev, values)).collect();
                if let Some(texts) = texts {
                    texts.iter().for_each(|t| out.push_str(t));
                }
            }
            p => out.push_str(&piece_text(p, ev, values).unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::AuditEvent;

    #[test]
    fn renders_fields_values_and_optional_parts() {
        let ev: AuditEvent = serde_json::from_str(
            r#"{"verb":"get","user":{"username":"bob"},"sourceIPs":["10.0.0.1","10.0.0.2"]}"#,
        )
        .unwrap();
        let view = EventView::new(&ev, 0);
        let t = Template::parse(
            "{user.username} did {verb}[ on {objectRef.name}][ from {sourceIPs}] ({count}), {objectRef.name|verb}[ {requestObject.spec.(containers|initContainers)[*].image}].",
            &["count"],
        )
        .unwrap();
        let values = [("count", "3".to_string())];
        assert_eq!(
            t.render(&view, &values),
            "bob did get from 10.0.0.1, 10.0.0.2 (3), get."
        );
        assert!(t.complete(&view, &values));
        assert!(!t.complete(&view, &[]), "count is not optional");
        assert!(Template::parse("{user.nope}", &[]).is_err());
        assert!(Template::parse("{count}", &[]).is_err(), "not offered");
        assert!(Template::parse("{verb", &[]).is_err());
        assert!(Template::parse("[{verb}", &[]).is_err());
        assert!(Template::parse("[a [b]]", &[]).is_err());
        assert!(Template::parse("a]", &[]).is_err());
    }
}
