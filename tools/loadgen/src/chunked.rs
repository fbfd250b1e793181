//! An incremental decoder of `Transfer-Encoding: chunked`, for a streamed body that arrives in
//! reads that cut anywhere: through a size line, a chunk's data or its closing CRLF.

/// Where the decoder is in the chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a size line (`<hex>[;ext]\r\n`).
    Size,
    /// Inside a chunk's data: bytes left.
    Data(usize),
    /// The CRLF after a chunk's data: bytes left of it.
    DataEnd(u8),
    /// After the zero-size chunk: trailer lines up to an empty one.
    Trailers,
    /// The body has ended.
    Done,
}

/// Decodes a chunked body fed to it piece by piece.
#[derive(Debug)]
pub(crate) struct Dechunker {
    state: State,
    /// The part of a size or trailer line read so far.
    line: Vec<u8>,
}

impl Default for Dechunker {
    fn default() -> Self {
        Dechunker {
            state: State::Size,
            line: Vec::new(),
        }
    }
}

impl Dechunker {
    /// Whether the body's end (the zero-size chunk and its trailers) has been read.
    pub(crate) fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes `input`, appending the body's bytes to `out`. Bytes after the body's end are
    /// ignored (no request is pipelined behind a stream).
    pub(crate) fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
        while !input.is_empty() {
            match self.state {
                State::Done => return Ok(()),
                State::Data(left) => {
                    let n = left.min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.state = if n == left {
                        State::DataEnd(2)
                    } else {
                        State::Data(left - n)
                    };
                }
                State::DataEnd(left) => {
                    let n = usize::from(left).min(input.len());
                    if input[..n].iter().any(|b| *b != b'\r' && *b != b'\n') {
                        return Err(bad("a chunk's data is longer than its size"));
                    }
                    input = &input[n..];
                    self.state = if n == usize::from(left) {
                        State::Size
                    } else {
                        State::DataEnd(left - n as u8)
                    };
                }
                State::Size | State::Trailers => {
                    let Some(eol) = input.iter().position(|b| *b == b'\n') else {
                        self.line.extend_from_slice(input);
                        return Ok(());
                    };
                    self.line.extend_from_slice(&input[..eol]);
                    input = &input[eol + 1..];
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    self.state = if self.state == State::Trailers {
                        if line.is_empty() {
                            State::Done
                        } else {
                            State::Trailers
                        }
                    } else {
                        match chunk_size(line)? {
                            0 => State::Trailers,
                            n => State::Data(n),
                        }
                    };
                }
            }
        }
        Ok(())
    }
}

/// The size a chunk's size line gives (hex, before any `;` extension).
fn chunk_size(line: &[u8]) -> std::io::Result<usize> {
    let text = std::str::from_utf8(line).map_err(|_| bad("a chunk size is not text"))?;
    let hex = text.split(';').next().unwrap_or("").trim();
    usize::from_str_radix(hex, 16).map_err(|_| bad("a chunk size is not hex"))
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n";

    fn decode(pieces: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut d = Dechunker::default();
        let mut out = Vec::new();
        for p in pieces {
            d.feed(p, &mut out).unwrap();
        }
        (out, d.done())
    }

    #[test]
    fn a_body_in_one_piece() {
        assert_eq!(decode(&[BODY]), (b"hello, world".to_vec(), true));
    }

    #[test]
    fn every_cut_of_the_body_decodes_the_same() {
        for a in 0..BODY.len() {
            for b in a..BODY.len() {
                let got = decode(&[&BODY[..a], &BODY[a..b], &BODY[b..]]);
                assert_eq!(got, (b"hello, world".to_vec(), true), "cut at {a} and {b}");
            }
        }
    }

    #[test]
    fn an_unfinished_body_is_not_done() {
        let (out, done) = decode(&[b"5\r\nhel"]);
        assert_eq!(out, b"hel");
        assert!(!done);
        let (_, done) = decode(&[b"5\r\nhello\r\n0\r\n"]);
        assert!(
            !done,
            "the empty line after the last chunk is still to come"
        );
    }

    #[test]
    fn bad_framing_is_an_error() {
        let mut out = Vec::new();
        assert!(Dechunker::default().feed(b"zz\r\n", &mut out).is_err());
        assert!(
            Dechunker::default()
                .feed(b"2\r\nabc\r\n", &mut out)
                .is_err()
        );
    }
}
