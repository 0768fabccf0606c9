//! Splits a byte stream into records: one per line, or the whole stream when it is a single
//! pretty-printed JSON document (an `EventList` saved from a webhook, a JSON array).
//! Lines longer than the cap are skipped to their end, never buffered whole.

use std::io::{self, BufRead};

#[derive(Debug)]
pub enum Next {
    /// A record is in `LineReader::record()`.
    Record,
    /// A line over the cap was skipped; `len` is its full length, and `record()` holds its
    /// first `HEAD` bytes.
    TooLong {
        len: u64,
    },
    /// The stream failed (e.g. a corrupt archive); nothing more is read from it.
    Failed(io::Error),
    Eof,
}

/// How much of a record over the cap is kept (for the dead-letter output).
pub const HEAD: usize = 64 << 10;

pub struct LineReader {
    inner: Box<dyn BufRead + Send>,
    max: usize,
    buf: Vec<u8>,
    /// 1-based number of the line the current record starts on.
    line: u64,
    /// Byte offset (in the decompressed stream) where the current record starts.
    offset: u64,
    next_offset: u64,
    lines_read: u64,
    started: bool,
    done: bool,
}

impl LineReader {
    pub fn new(inner: Box<dyn BufRead + Send>, max_record_bytes: usize) -> Self {
        LineReader {
            inner,
            max: max_record_bytes,
            buf: Vec::new(),
            line: 0,
            offset: 0,
            next_offset: 0,
            lines_read: 0,
            started: false,
            done: false,
        }
    }

    pub fn record(&self) -> &[u8] {
        &self.buf
    }
    pub fn line(&self) -> u64 {
        self.line
    }
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the next non-blank record.
    pub fn next_record(&mut self) -> Next {
        loop {
            if self.done {
                return Next::Eof;
            }
            self.line = self.lines_read + 1;
            self.offset = self.next_offset;
            self.buf.clear();
            let (len, complete) = match self.read_line() {
                Ok(x) => x,
                Err(e) => {
                    self.done = true;
                    return Next::Failed(e);
                }
            };
            if len == 0 {
                self.done = true;
                return Next::Eof;
            }
            self.lines_read += 1;
            self.next_offset += len;
            // Only the stream's first line opens a document: after an oversize first line, a
            // lone `{` or `[` is a record of its own, not the start of one (which would glue
            // every line after it into one record).
            let first = !self.started;
            self.started = true;
            if !complete {
                return Next::TooLong { len };
            }
            let trimmed = self.buf.trim_ascii();
            if trimmed.is_empty() {
                continue;
            }
            if first && (trimmed == b"{" || trimmed == b"[") {
                return self.read_document();
            }
            return Next::Record;
        }
    }

    /// Appends one line (without its newline) to `buf`, keeping at most `max` bytes.
    /// Returns the line's full length including the newline, and whether it fit.
    fn read_line(&mut self) -> io::Result<(u64, bool)> {
        let mut len = 0u64;
        let mut fits = true;
        loop {
            let chunk = match self.inner.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                return Ok((len, fits));
            }
            let (take, end) = match memchr::memchr(b'\n', chunk) {
                Some(i) => (i, true),
                None => (chunk.len(), false),
            };
            if fits && self.buf.len() + take <= self.max {
                self.buf.extend_from_slice(&chunk[..take]);
            } else {
                // Over the cap: only its head is kept, for the dead-letter output.
                if fits {
                    fits = false;
                    self.buf.truncate(HEAD);
                }
                let room = HEAD.saturating_sub(self.buf.len());
                self.buf.extend_from_slice(&chunk[..take.min(room)]);
            }
            let consumed = take + usize::from(end);
            len += consumed as u64;
            self.inner.consume(consumed);
            if end {
                return Ok((len, fits));
            }
        }
    }

    /// The first line was a lone `{` or `[`: the stream is one JSON document.
    fn read_document(&mut self) -> Next {
        self.buf.push(b'\n');
        loop {
            match self.read_line() {
                Ok((0, _)) => break,
                Ok((len, fits)) => {
                    self.lines_read += 1;
                    self.next_offset += len;
                    if !fits || self.buf.len() + 1 > self.max {
                        // Drain the rest so the whole document counts as one oversize record;
                        // its head is kept.
                        self.buf.truncate(HEAD);
                        let head = std::mem::take(&mut self.buf);
                        let mut total = self.next_offset - self.offset;
                        loop {
                            self.buf.clear();
                            match self.read_line() {
                                Ok((0, _)) => break,
                                Ok((n, _)) => total += n,
                                Err(e) => {
                                    self.done = true;
                                    return Next::Failed(e);
                                }
                            }
                        }
                        self.done = true;
                        self.buf = head;
                        return Next::TooLong { len: total };
                    }
                    self.buf.push(b'\n');
                }
                Err(e) => {
                    self.done = true;
                    return Next::Failed(e);
                }
            }
        }
        self.done = true;
        Next::Record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(s: &str, max: usize) -> LineReader {
        LineReader::new(Box::new(io::Cursor::new(s.as_bytes().to_vec())), max)
    }

    #[test]
    fn splits_lines_skips_blanks_and_tracks_positions() {
        let mut r = reader("{\"a\":1}\n\n{\"b\":2}", 100);
        assert!(matches!(r.next_record(), Next::Record));
        assert_eq!(
            (r.record(), r.line(), r.offset()),
            (&b"{\"a\":1}"[..], 1, 0)
        );
        assert!(matches!(r.next_record(), Next::Record));
        assert_eq!(
            (r.record(), r.line(), r.offset()),
            (&b"{\"b\":2}"[..], 3, 9)
        );
        assert!(matches!(r.next_record(), Next::Eof));
    }

    #[test]
    fn oversize_line_is_skipped_whole() {
        let long = "x".repeat(50);
        let mut r = reader(&format!("{long}\nok\n"), 10);
        assert!(matches!(r.next_record(), Next::TooLong { len: 51 }));
        assert_eq!(r.line(), 1);
        assert!(matches!(r.next_record(), Next::Record));
        assert_eq!((r.record(), r.line()), (&b"ok"[..], 2));
    }

    /// Found by the property tests (tests/properties.rs): a `[` on line 2 after an oversize
    /// line 1 was read as a document's start, and every line after it as part of that document.
    #[test]
    fn a_bracket_after_an_oversize_first_line_is_no_document() {
        let mut r = reader("xxxxxxxxxx\n[\n{\"a\":1}\n]\n", 8);
        assert!(matches!(r.next_record(), Next::TooLong { len: 11 }));
        for (record, line) in [(&b"["[..], 2), (&b"{\"a\":1}"[..], 3), (&b"]"[..], 4)] {
            assert!(matches!(r.next_record(), Next::Record));
            assert_eq!((r.record(), r.line()), (record, line));
        }
        assert!(matches!(r.next_record(), Next::Eof));
    }

    #[test]
    fn pretty_printed_document_is_one_record() {
        let doc = "{\n  \"kind\": \"EventList\",\n  \"items\": []\n}\n";
        let mut r = reader(doc, 1000);
        assert!(matches!(r.next_record(), Next::Record));
        let v: serde_json::Value = serde_json::from_slice(r.record()).unwrap();
        assert_eq!(v["kind"], "EventList");
        assert!(matches!(r.next_record(), Next::Eof));
        let mut small = reader(doc, 8);
        assert!(matches!(small.next_record(), Next::TooLong { len } if len == doc.len() as u64));
    }
}
