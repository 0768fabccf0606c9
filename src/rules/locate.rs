//! Where in a rule file a problem is: maps a path such as
//! `rules[3].condition.all[1].objectRef.resource.globb` back to the line and column of that node,
//! so `rules check` can say `detectors/x.yaml:14:11: …` for errors found after parsing (unknown
//! operators, bad regexes, unknown fields) and not only for YAML syntax errors.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A YAML node with the position of its first character (for mapping values: of their key).
enum Node {
    Map(Vec<(String, Node)>, Marker),
    Seq(Vec<Node>, Marker),
    Scalar(String, Marker),
}

impl Node {
    fn mark(&self) -> Marker {
        match self {
            Node::Map(_, m) | Node::Seq(_, m) | Node::Scalar(_, m) => *m,
        }
    }
}

#[derive(Default)]
struct Builder {
    stack: Vec<Node>,
    /// Pending key of each open mapping (and where it was written).
    keys: Vec<Option<(String, Marker)>>,
    root: Option<Node>,
}

impl Builder {
    fn push(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Node::Seq(items, _)) => items.push(node),
            Some(Node::Map(entries, _)) => {
                let slot = self.keys.last_mut().and_then(Option::take);
                match (slot, node) {
                    // The key itself.
                    (None, Node::Scalar(k, m)) => {
                        if let Some(last) = self.keys.last_mut() {
                            *last = Some((k, m));
                        }
                    }
                    (None, _) => {} // complex keys: not addressable by our paths
                    (Some((k, m)), value) => entries.push((k, at(value, m))),
                }
            }
            Some(Node::Scalar(..)) => {}
        }
    }
}

/// A value placed at its key's position, which is where a reader looks.
fn at(node: Node, key: Marker) -> Node {
    match node {
        Node::Map(e, _) => Node::Map(e, key),
        Node::Seq(i, _) => Node::Seq(i, key),
        Node::Scalar(s, _) => Node::Scalar(s, key),
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::MappingStart(..) => {
                self.stack.push(Node::Map(Vec::new(), mark));
                self.keys.push(None);
            }
            Event::SequenceStart(..) => self.stack.push(Node::Seq(Vec::new(), mark)),
            Event::MappingEnd | Event::SequenceEnd => {
                if matches!(self.stack.last(), Some(Node::Map(..))) {
                    self.keys.pop();
                }
                if let Some(node) = self.stack.pop() {
                    self.push(node);
                }
            }
            Event::Scalar(s, ..) => self.push(Node::Scalar(s, mark)),
            Event::Alias(_) => self.push(Node::Scalar(String::new(), mark)),
            _ => {}
        }
    }
}

/// Line and column (1-based) of the deepest node along `path` in the YAML `text`.
pub fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    let mut b = Builder::default();
    Parser::new_from_str(text).load(&mut b, false).ok()?;
    let mut node = b.root.as_ref()?;
    let mut rest = path;
    let mut found = None;
    loop {
        rest = rest.strip_prefix('.').unwrap_or(rest);
        let next = match node {
            Node::Seq(items, _) => {
                let Some(inner) = rest.strip_prefix('[') else {
                    break;
                };
                let Some((n, after)) = inner.split_once(']') else {
                    break;
                };
                let Some(item) = n.parse::<usize>().ok().and_then(|i| items.get(i)) else {
                    break;
                };
                rest = after;
                item
            }
            Node::Map(entries, _) => {
                // Keys may contain dots (`objectRef.resource`): take the longest that fits.
                let hit = entries
                    .iter()
                    .filter(|(k, _)| {
                        rest.strip_prefix(k.as_str())
                            .is_some_and(|after| after.is_empty() || after.starts_with(['.', '[']))
                    })
                    .max_by_key(|(k, _)| k.len());
                let Some((k, v)) = hit else { break };
                rest = &rest[k.len()..];
                v
            }
            Node::Scalar(..) => break,
        };
        found = Some(next.mark());
        node = next;
        if rest.is_empty() {
            break;
        }
    }
    // yaml-rust2 counts lines from 1 and columns from 0.
    found.map(|m| (m.line(), m.col() + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = "rules:
  - id: a
    condition: {verb: get}
  - id: b
    condition:
      all:
        - verb: get
        - objectRef.resource: {globb: \"sec*\"}
";

    #[test]
    fn finds_nested_nodes_and_dotted_keys() {
        assert_eq!(
            locate(RULES, "rules[1].condition.all[1].objectRef.resource.globb"),
            Some((8, 32))
        );
        assert_eq!(locate(RULES, "rules[1].condition"), Some((5, 5)));
        // A path that leaves the file (a macro's inside) stops at the deepest node it reached.
        assert_eq!(locate(RULES, "rules[0].condition.any[2]"), Some((3, 5)));
        assert_eq!(locate("rules: [", "rules[0]"), None);
    }
}
