//! Where a chunked body ends. The fast path forwards chunked bodies byte for byte (no
//! de-chunking and re-chunking as Pingora does); it only has to know when the message is
//! over, so the upstream connection can go back to the pool and the next response start.

/// Incremental scanner over the raw bytes of a `Transfer-Encoding: chunked` body.
#[derive(Debug, Default)]
pub struct ChunkedEnd {
    state: State,
    size: u64,
    digits: u8,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    FinalLf,
    Done,
}

/// What one call to [`ChunkedEnd::feed`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// All of the input belongs to the body, and more is to come.
    More,
    /// The body ends after this many bytes of the input.
    End(usize),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct BadChunk;

/// More hex digits than this cannot be a real chunk size (16 would overflow u64 checks).
const MAX_SIZE_DIGITS: u8 = 15;

impl ChunkedEnd {
    pub fn feed(&mut self, input: &[u8]) -> Result<Scan, BadChunk> {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Data {
                let left = input.len() - i;
                let take = usize::try_from(self.size).map_or(left, |s| s.min(left));
                i += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = input[i];
            i += 1;
            self.state = match (self.state, b) {
                (State::Size, b) if b.is_ascii_hexdigit() => {
                    if self.digits == MAX_SIZE_DIGITS {
                        return Err(BadChunk);
                    }
                    self.digits += 1;
                    self.size = self.size * 16 + u64::from(hex_value(b));
                    State::Size
                }
                (State::Size, b';' | b' ' | b'\t') if self.digits > 0 => State::Extension,
                (State::Size, b'\r') if self.digits > 0 => State::SizeLf,
                (State::Size, b'\n') if self.digits > 0 => self.after_size(),
                (State::Extension, b'\r') => State::SizeLf,
                (State::Extension, b'\n') => self.after_size(),
                (State::Extension, _) => State::Extension,
                (State::SizeLf, b'\n') => self.after_size(),
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataCr | State::DataLf, b'\n') => State::Size,
                (State::TrailerStart, b'\r') => State::FinalLf,
                (State::TrailerStart | State::FinalLf, b'\n') => {
                    self.state = State::Done;
                    return Ok(Scan::End(i));
                }
                (State::Trailer, b'\n') => State::TrailerStart,
                (State::TrailerStart | State::Trailer, _) => State::Trailer,
                _ => return Err(BadChunk),
            };
        }
        Ok(Scan::More)
    }

    fn after_size(&mut self) -> State {
        self.digits = 0;
        if self.size == 0 {
            State::TrailerStart
        } else {
            State::Data
        }
    }
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end_of(parts: &[&[u8]]) -> Result<Option<usize>, BadChunk> {
        let mut scan = ChunkedEnd::default();
        let mut offset = 0;
        for part in parts {
            if let Scan::End(n) = scan.feed(part)? {
                return Ok(Some(offset + n));
            }
            offset += part.len();
        }
        Ok(None)
    }

    #[test]
    fn finds_the_end_in_one_piece() {
        let body = b"5\r\nhello\r\n1A;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nNEXT";
        assert_eq!(end_of(&[body]), Ok(Some(body.len() - 4)));
    }

    #[test]
    fn finds_the_end_split_at_every_byte() {
        let body = b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let parts: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(end_of(&parts), Ok(Some(body.len())));
        for cut in 0..body.len() {
            let (a, b) = body.split_at(cut);
            assert_eq!(end_of(&[a, b]), Ok(Some(body.len())), "cut at {cut}");
        }
    }

    #[test]
    fn incomplete_bodies_ask_for_more() {
        assert_eq!(end_of(&[b"5\r\nhel"]), Ok(None));
        assert_eq!(end_of(&[b"0\r\n"]), Ok(None));
        assert_eq!(end_of(&[b"0\r\nTrailer: x\r\n"]), Ok(None));
    }

    #[test]
    fn bare_newlines_are_tolerated() {
        assert_eq!(end_of(&[b"2\nab\n0\n\nX"]), Ok(Some(8)));
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(end_of(&[b"zz\r\n"]), Err(BadChunk));
        assert_eq!(end_of(&[b"\r\n"]), Err(BadChunk));
        assert_eq!(end_of(&[b"2\r\nabX\r\n"]), Err(BadChunk));
        assert_eq!(end_of(&[b"1234567890abcdef0\r\n"]), Err(BadChunk));
    }
}
