//! The de-chunker of `Transfer-Encoding: chunked` bodies, fed as bytes arrive.

use super::*;

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChunkState {
    /// Reading a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes to go.
    Data(usize),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// Reading trailer lines after the last chunk.
    Trailer,
    /// The body is complete.
    Done,
}

/// An incremental `Transfer-Encoding: chunked` decoder (RFC 9112 §7.1): chunk-size lines are
/// parsed by `httparse`; this walks the data, the CRLFs and the trailer section.
#[derive(Debug)]
pub(super) struct Dechunker {
    pub(super) state: ChunkState,
    pub(super) limit: usize,
}

/// What [`Dechunker::feed`] found wrong.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ChunkError {
    Malformed(&'static str),
    TooLarge,
}

impl Dechunker {
    pub(super) fn new(limit: usize) -> Dechunker {
        Dechunker {
            state: ChunkState::Size,
            limit,
        }
    }

    /// Decodes what it can of `input` into `out`; returns how many input bytes it consumed.
    /// Call again with the unconsumed rest plus new bytes until the state is `Done`.
    pub(super) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ChunkError> {
        let mut at = 0;
        loop {
            let rest = &input[at..];
            match self.state {
                ChunkState::Done => return Ok(at),
                ChunkState::Size => match httparse::parse_chunk_size(rest) {
                    // A line over the cap is refused whether it arrives whole or in pieces
                    // (the Partial arm below refuses it before its end arrives).
                    Ok(httparse::Status::Complete((n, _))) if n > MAX_CHUNK_LINE => {
                        return Err(ChunkError::Malformed("chunk line too long"));
                    }
                    Ok(httparse::Status::Complete((n, size))) => {
                        at += n;
                        let size = usize::try_from(size).unwrap_or(usize::MAX);
                        if size == 0 {
                            self.state = ChunkState::Trailer;
                        } else if size > self.limit.saturating_sub(out.len()) {
                            return Err(ChunkError::TooLarge);
                        } else {
                            self.state = ChunkState::Data(size);
                        }
                    }
                    Ok(httparse::Status::Partial) if rest.len() > MAX_CHUNK_LINE => {
                        return Err(ChunkError::Malformed("chunk line too long"));
                    }
                    Ok(httparse::Status::Partial) => return Ok(at),
                    Err(_) => return Err(ChunkError::Malformed("bad chunk size")),
                },
                ChunkState::Trailer => {
                    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                        if rest.len() > MAX_CHUNK_LINE {
                            return Err(ChunkError::Malformed("trailer line too long"));
                        }
                        return Ok(at);
                    };
                    if nl + 1 > MAX_CHUNK_LINE {
                        return Err(ChunkError::Malformed("trailer line too long"));
                    }
                    if !rest[..nl].ends_with(b"\r") {
                        return Err(ChunkError::Malformed("trailer line without CRLF"));
                    }
                    at += nl + 1;
                    if nl == 1 {
                        self.state = ChunkState::Done;
                    }
                }
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        return Ok(at);
                    }
                    let n = left.min(rest.len());
                    out.extend_from_slice(&rest[..n]);
                    at += n;
                    self.state = if n == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n)
                    };
                }
                ChunkState::DataEnd => {
                    if rest.len() < 2 {
                        return Ok(at);
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(ChunkError::Malformed("chunk data not followed by CRLF"));
                    }
                    at += 2;
                    self.state = ChunkState::Size;
                }
            }
        }
    }
}

/// Decodes a chunked body that arrives in `pieces`, fed the way a connection feeds it (the
/// unconsumed rest, then the next piece appended), under a body cap of `limit` bytes.
/// `Ok((body, done))`: `done` is true when the final chunk and trailer section were read, and
/// then the input after them is not consumed. The entry point of the `dechunk` fuzz target and
/// its corpus replay (`tests/fuzz_corpus.rs`); not used by the server.
///
/// Invariants checked here on every call: the decoder never consumes more than it was given,
/// and the body never exceeds `limit`.
#[doc(hidden)]
pub fn dechunk_pieces(limit: usize, pieces: &[&[u8]]) -> Result<(Vec<u8>, bool), String> {
    let mut d = Dechunker::new(limit);
    let mut out = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    for piece in pieces {
        pending.extend_from_slice(piece);
        let n = d.feed(&pending, &mut out).map_err(|e| format!("{e:?}"))?;
        assert!(
            n <= pending.len(),
            "consumed {n} of {} bytes",
            pending.len()
        );
        assert!(
            out.len() <= limit,
            "body of {} over the {limit} cap",
            out.len()
        );
        pending.drain(..n);
        if d.state == ChunkState::Done {
            return Ok((out, true));
        }
    }
    Ok((out, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks_across_any_split() {
        let wire =
            b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for cut in 0..wire.len() {
            let mut d = Dechunker::new(1 << 20);
            let mut out = Vec::new();
            let mut pending = wire[..cut].to_vec();
            let n = d.feed(&pending, &mut out).unwrap();
            pending.drain(..n);
            pending.extend_from_slice(&wire[cut..]);
            let n2 = d.feed(&pending, &mut out).unwrap();
            assert_eq!(d.state, ChunkState::Done, "cut {cut}");
            assert_eq!(out, b"Wikipedia in\r\n\r\nchunks.");
            assert_eq!(&pending[n2..], b"NEXT", "cut {cut}");
        }
    }

    #[test]
    fn a_long_chunk_or_trailer_line_is_refused_whole_or_in_pieces() {
        // Found by the dechunk fuzz target: a line over the cap used to pass when it arrived
        // whole and fail when it arrived in pieces.
        let long_ext = format!(
            "5;{}\r\nhello\r\n0\r\n\r\n",
            "x".repeat(MAX_CHUNK_LINE + 10)
        );
        let long_trailer = format!("0\r\nX-T: {}\r\n\r\n", "y".repeat(MAX_CHUNK_LINE + 10));
        for body in [long_ext, long_trailer] {
            let b = body.as_bytes();
            let whole = dechunk_pieces(1 << 20, &[b]);
            let split = dechunk_pieces(1 << 20, &[&b[..600], &b[600..]]);
            assert!(whole.is_err() && split.is_err(), "{whole:?} vs {split:?}");
        }
        // At the cap, a line passes either way.
        let at_cap = format!("5;{}\r\nhello\r\n0\r\n\r\n", "x".repeat(MAX_CHUNK_LINE - 5));
        let b = at_cap.as_bytes();
        assert_eq!(dechunk_pieces(1 << 20, &[b]), Ok((b"hello".to_vec(), true)));
        assert_eq!(
            dechunk_pieces(1 << 20, &[&b[..600], &b[600..]]),
            Ok((b"hello".to_vec(), true))
        );
    }

    #[test]
    fn dechunk_refuses_garbage_and_oversize() {
        let mut out = Vec::new();
        assert_eq!(
            Dechunker::new(100).feed(b"zz\r\nab\r\n", &mut out),
            Err(ChunkError::Malformed("bad chunk size"))
        );
        assert_eq!(
            Dechunker::new(100).feed(b"2\r\nabX\r\n", &mut out),
            Err(ChunkError::Malformed("chunk data not followed by CRLF"))
        );
        assert_eq!(
            Dechunker::new(4).feed(b"5\r\nabcde\r\n", &mut out),
            Err(ChunkError::TooLarge)
        );
        let long = vec![b'1'; MAX_CHUNK_LINE + 1];
        assert!(matches!(
            Dechunker::new(100).feed(&long, &mut out),
            Err(ChunkError::Malformed(_))
        ));
    }
}
