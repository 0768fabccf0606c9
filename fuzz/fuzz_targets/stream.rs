//! A byte stream cut into records (`source::lines::LineReader`, lines or one pretty-printed
//! document) and each record decoded. The reader must give the same records whether the stream
//! arrives in one buffer or in small reads of any size, and they must be the stream's lines
//! (unless it is one document). The first two bytes pick the record cap and the read size.
#![no_main]
use audithound::source::lines::{LineReader, Next};
use libfuzzer_sys::fuzz_target;
use std::io::{BufReader, Cursor};

#[derive(Debug, PartialEq)]
enum Seen {
    Record(Vec<u8>, u64, u64),
    TooLong(u64),
    Eof,
}

fn records(reader: Box<dyn std::io::BufRead + Send>, max: usize) -> Vec<Seen> {
    let mut lines = LineReader::new(reader, max);
    let mut out = Vec::new();
    loop {
        let seen = match lines.next_record() {
            Next::Record => Seen::Record(lines.record().to_vec(), lines.line(), lines.offset()),
            Next::TooLong { len } => Seen::TooLong(len),
            Next::Failed(e) => panic!("reading a buffer failed: {e}"),
            Next::Eof => Seen::Eof,
        };
        let eof = seen == Seen::Eof;
        out.push(seen);
        if eof || out.len() > 100_000 {
            return out;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [cap, read, rest @ ..] = data else {
        return;
    };
    let max = 1 + *cap as usize * 16;
    let whole = records(Box::new(Cursor::new(rest.to_vec())), max);
    let small = records(
        Box::new(BufReader::with_capacity(
            1 + *read as usize % 64,
            Cursor::new(rest.to_vec()),
        )),
        max,
    );
    assert_eq!(
        whole, small,
        "the records depend on how the stream was read"
    );
    // Unless its first line is a lone `{` or `[` (one document), the records are the stream's
    // non-blank lines within the cap, each with its own line number.
    let first = rest.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let document = matches!(first.trim_ascii(), b"{" | b"[") && first.len() <= max;
    if !document {
        let lines: Vec<(&[u8], u64)> = rest
            .split(|b| *b == b'\n')
            .zip(1..)
            .filter(|(l, _)| !l.trim_ascii().is_empty() && l.len() <= max)
            .collect();
        let records: Vec<(&[u8], u64)> = whole
            .iter()
            .filter_map(|seen| match seen {
                Seen::Record(record, line, _) => Some((&record[..], *line)),
                _ => None,
            })
            .collect();
        assert_eq!(records, lines, "the records are not the stream's lines");
    }
    let mut last = (0, 0);
    for seen in &whole {
        if let Seen::Record(record, line, offset) = seen {
            // A document keeps the newline after its first line: at most one byte over.
            assert!(record.len() <= max + 1, "a record over the cap");
            assert!((*line, *offset) > last, "records go forward");
            last = (*line, *offset);
            audithound_fuzz::decode_all(record);
        }
    }
});
