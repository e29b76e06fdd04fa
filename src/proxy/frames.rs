//! WebSocket frame boundaries in a byte stream, so the gateway can put a frame of its own
//! (a ping, a close) between two of the runtime's without decoding or buffering them.
//!
//! A tunnel copies the runtime's bytes to the client unchanged; only the frame headers are
//! read (RFC 6455 §5.2: two bytes, an extended length of 2 or 8, a mask key of 4) to know
//! where each frame ends. Control frames may come between any two frames, even between the
//! fragments of one message (§5.4), so any boundary will do. A stream that stops making
//! sense as frames (a length no frame can have) is followed no further: the tunnel goes on
//! copying, and puts nothing in.

/// A ping without payload, as a server sends it (unmasked).
pub const PING: [u8; 2] = [0x89, 0x00];

/// A close frame with status 1001 ("going away"), as a server sends it (unmasked).
pub const CLOSE_GOING_AWAY: [u8; 4] = [0x88, 0x02, 0x03, 0xe9];

/// Where the stream is: in a frame's header (with what of it has arrived), in its payload,
/// or lost.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Header { bytes: [u8; 14], have: usize },
    Payload { remaining: u64 },
    Lost,
}

/// Follows one direction of a WebSocket connection, frame by frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameBoundaries {
    state: State,
}

impl Default for FrameBoundaries {
    fn default() -> Self {
        FrameBoundaries {
            state: State::Header {
                bytes: [0; 14],
                have: 0,
            },
        }
    }
}

impl FrameBoundaries {
    /// True when the bytes seen so far end exactly between two frames.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header { have: 0, .. })
    }

    /// True once the stream has stopped making sense as frames.
    pub fn is_lost(&self) -> bool {
        self.state == State::Lost
    }

    /// Follows `chunk`, the next bytes of the stream. Returns the first offset in it
    /// (`0..=chunk.len()`) that is between two frames, if there is one: where a frame of
    /// the gateway's may go.
    pub fn feed(&mut self, chunk: &[u8]) -> Option<usize> {
        let mut first = self.at_boundary().then_some(0);
        let mut at = 0;
        while at < chunk.len() {
            match &mut self.state {
                State::Lost => return first,
                State::Payload { remaining } => {
                    let take = (*remaining).min((chunk.len() - at) as u64);
                    *remaining -= take;
                    at += take as usize;
                    if *remaining == 0 {
                        self.state = State::Header {
                            bytes: [0; 14],
                            have: 0,
                        };
                    }
                }
                State::Header { bytes, have } => {
                    bytes[*have] = chunk[at];
                    *have += 1;
                    at += 1;
                    if *have < 2 {
                        continue;
                    }
                    let masked = bytes[1] & 0x80 != 0;
                    let extended = match bytes[1] & 0x7f {
                        126 => 2,
                        127 => 8,
                        _ => 0,
                    };
                    let length = 2 + extended + if masked { 4 } else { 0 };
                    if *have < length {
                        continue;
                    }
                    let payload = match extended {
                        0 => u64::from(bytes[1] & 0x7f),
                        2 => u64::from(u16::from_be_bytes([bytes[2], bytes[3]])),
                        _ => u64::from_be_bytes(bytes[2..10].try_into().expect("eight bytes")),
                    };
                    // The most significant bit of a 64-bit length must be 0 (§5.2).
                    if payload >> 63 != 0 {
                        self.state = State::Lost;
                        return first;
                    }
                    self.state = if payload == 0 {
                        State::Header {
                            bytes: [0; 14],
                            have: 0,
                        }
                    } else {
                        State::Payload { remaining: payload }
                    };
                }
            }
            if first.is_none() && self.at_boundary() {
                first = Some(at);
            }
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server frame (unmasked) with `payload`, using the shortest length encoding.
    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n if n <= u16::MAX as usize => {
                out.push(126);
                out.extend((n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend((n as u64).to_be_bytes());
            }
        }
        out.extend(payload);
        out
    }

    #[test]
    fn finds_the_boundaries_of_frames_of_every_length_encoding_split_anywhere() {
        let frames = [
            frame(0x2, &[7; 5]),
            frame(0x1, &[]),
            frame(0x2, &[1; 300]),
            frame(0x9, b"ping"),
            frame(0x2, &[2; 70_000]),
        ];
        let stream: Vec<u8> = frames.concat();
        // Where the stream is between frames: its start and the end of each frame.
        let mut boundaries = vec![0];
        for f in &frames {
            boundaries.push(boundaries.last().unwrap() + f.len());
        }
        for size in [1, 2, 3, 7, 64, 1000, stream.len()] {
            let mut tracker = FrameBoundaries::default();
            let mut offset = 0;
            for chunk in stream.chunks(size) {
                let end = offset + chunk.len();
                let expected = boundaries
                    .iter()
                    .find(|&&b| b >= offset && b <= end)
                    .map(|b| b - offset);
                assert_eq!(tracker.feed(chunk), expected, "chunks of {size}, at {offset}");
                offset = end;
            }
            assert!(tracker.at_boundary(), "chunks of {size}");
        }
    }

    #[test]
    fn the_first_boundary_of_a_chunk_is_where_a_frame_may_go() {
        let mut tracker = FrameBoundaries::default();
        assert_eq!(tracker.feed(&[]), Some(0), "nothing seen yet: between frames");
        let data = frame(0x2, &[9; 10]);
        // A chunk that starts between frames has a boundary at 0; one inside a frame has
        // none; the one that ends the frame has it at its end.
        assert_eq!(tracker.feed(&data[..4]), Some(0));
        assert!(!tracker.at_boundary());
        assert_eq!(tracker.feed(&data[4..8]), None);
        assert_eq!(tracker.feed(&data[8..]), Some(data.len() - 8));
        assert!(tracker.at_boundary());
        // A masked frame (as clients send) is followed too.
        let mut masked = vec![0x82, 0x80 | 3, 1, 2, 3, 4];
        masked.extend([5, 6, 7]);
        assert_eq!(tracker.feed(&masked), Some(0));
        assert!(tracker.at_boundary());
    }

    #[test]
    fn a_stream_that_is_not_frames_is_followed_no_further() {
        let mut tracker = FrameBoundaries::default();
        let mut bogus = vec![0x82, 127];
        bogus.extend(u64::MAX.to_be_bytes());
        assert_eq!(tracker.feed(&bogus), Some(0));
        assert!(tracker.is_lost());
        assert!(!tracker.at_boundary());
        assert_eq!(tracker.feed(&frame(0x2, b"x")), None);
    }
}
