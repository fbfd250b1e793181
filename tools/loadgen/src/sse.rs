//! A `text/event-stream` parser, as a browser's `EventSource` reads one (the WHATWG HTML
//! "event stream interpretation"): lines end with LF, CRLF or CR; `data:` lines join with
//! `\n`; `id:` sets the last event id, kept across reconnects and sent back as
//! `Last-Event-ID`; `event:` names the event; `retry:` the reconnection delay; a line starting
//! with `:` is a comment; an empty line dispatches the event (none when it had no data). The
//! body is fed as it arrives, so a line or a frame may be cut anywhere.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    /// Its type: the `event:` field, else `message`.
    pub(crate) event: String,
    /// Its `data:` lines, joined with `\n`.
    pub(crate) data: String,
    /// The last event id when it was dispatched.
    pub(crate) id: String,
}

/// The parser of one client: the last event id and `retry` outlive each response;
/// [`SseParser::restart`] clears the rest for the next one.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    /// The part of a line read so far.
    line: Vec<u8>,
    /// The previous piece ended with CR: an LF starting the next one ends no new line.
    after_cr: bool,
    data: String,
    event: String,
    /// The last event id (what `Last-Event-ID` carries on a reconnect).
    pub(crate) last_id: String,
    /// The latest `retry:` (ms).
    pub(crate) retry_ms: Option<u64>,
    /// Comment lines seen (heartbeats, Nchan's `: hi`).
    pub(crate) comments: u64,
}

impl SseParser {
    /// Forgets a response's unfinished line and event, for the next response.
    pub(crate) fn restart(&mut self) {
        self.line.clear();
        self.after_cr = false;
        self.data.clear();
        self.event.clear();
    }

    /// Parses `input`, appending every event it completes to `out`.
    pub(crate) fn feed(&mut self, mut input: &[u8], out: &mut Vec<Frame>) {
        if input.is_empty() {
            return;
        }
        if self.after_cr && input[0] == b'\n' {
            input = &input[1..];
        }
        self.after_cr = false;
        while let Some(eol) = input.iter().position(|b| *b == b'\n' || *b == b'\r') {
            if self.line.is_empty() {
                self.field(&input[..eol], out);
            } else {
                // A line cut by the previous piece: its start waited in `self.line`.
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&input[..eol]);
                self.field(&line, out);
                line.clear();
                self.line = line;
            }
            let crlf = input[eol] == b'\r';
            input = &input[eol + 1..];
            if crlf {
                match input.first() {
                    Some(b'\n') => input = &input[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
        }
        self.line.extend_from_slice(input);
    }

    /// One line: a field, a comment, or (empty) the end of an event.
    fn field(&mut self, line: &[u8], out: &mut Vec<Frame>) {
        if line.is_empty() {
            if !self.data.is_empty() {
                // Each data line added its `\n`: the last one is not part of the data.
                self.data.pop();
                out.push(Frame {
                    event: if self.event.is_empty() {
                        "message".to_owned()
                    } else {
                        std::mem::take(&mut self.event)
                    },
                    data: std::mem::take(&mut self.data),
                    id: self.last_id.clone(),
                });
            }
            self.data.clear();
            self.event.clear();
            return;
        }
        if line[0] == b':' {
            self.comments += 1;
            return;
        }
        let (name, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match name {
            b"data" => {
                self.data.push_str(&value);
                self.data.push('\n');
            }
            b"event" => self.event = value.into_owned(),
            b"id" if !value.contains('\0') => self.last_id = value.into_owned(),
            b"retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry_ms = value.parse().ok();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon-like stream: retry, a heartbeat with a position, a gap, two events (one of
    /// two data lines), in every line-ending style.
    const STREAM: &str = "retry: 0\n\n: hb\nid: c1\n\nevent: gap\r\nid: c2\r\ndata: {\"gap\":true}\r\n\r\n\
                          id: c3\rdata: {\"a\":\rdata: 1}\r\rid: c4\ndata:x\n\n";

    fn expected() -> Vec<Frame> {
        let f = |event: &str, data: &str, id: &str| Frame {
            event: event.into(),
            data: data.into(),
            id: id.into(),
        };
        vec![
            f("gap", "{\"gap\":true}", "c2"),
            f("message", "{\"a\":\n1}", "c3"),
            f("message", "x", "c4"),
        ]
    }

    fn parse(pieces: &[&[u8]]) -> (Vec<Frame>, SseParser) {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for piece in pieces {
            p.feed(piece, &mut out);
        }
        (out, p)
    }

    #[test]
    fn fields_comments_and_line_endings() {
        let (frames, p) = parse(&[STREAM.as_bytes()]);
        assert_eq!(frames, expected());
        assert_eq!(p.last_id, "c4");
        assert_eq!(p.retry_ms, Some(0));
        assert_eq!(p.comments, 1);
    }

    #[test]
    fn every_cut_of_the_stream_parses_the_same() {
        let s = STREAM.as_bytes();
        for a in 0..s.len() {
            for b in a..s.len() {
                let (frames, p) = parse(&[&s[..a], &s[a..b], &s[b..]]);
                assert_eq!(frames, expected(), "cut at {a} and {b}");
                assert_eq!((p.last_id.as_str(), p.comments), ("c4", 1));
            }
        }
    }

    #[test]
    fn no_data_no_event_and_the_id_survives_a_restart() {
        let (frames, mut p) = parse(&[b"id: 7\nevent: x\n\nretry: soon\n: hi\n\ndata: hal"]);
        assert!(frames.is_empty(), "{frames:?}");
        assert_eq!(p.last_id, "7");
        assert_eq!(p.retry_ms, None, "a retry that is not a number is ignored");
        p.restart();
        let mut out = Vec::new();
        p.feed(b"data: 2\n\n", &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].data, "2",
            "the cut-off event of the last response is gone"
        );
        assert_eq!(out[0].id, "7");
    }

    #[test]
    fn nchan_event_stream() {
        let body =
            b": hi\n\nid: 1796612133:0\ndata: {\"seq\":1,\"t\":2}\n\n:408: 408 Request Timeout\n\n";
        let (frames, p) = parse(&[body]);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].data, r#"{"seq":1,"t":2}"#);
        assert_eq!(p.last_id, "1796612133:0");
        assert_eq!(p.comments, 2);
    }
}
