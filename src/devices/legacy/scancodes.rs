//! Terminal bytes → PC keyboard scancodes (set 1, US layout).
//!
//! A terminal sends characters; a PC keyboard sends key presses ("make" codes) and releases
//! ("break" codes: the make code with bit 7 set). So 'a' becomes 0x1E 0x9E, 'A' becomes
//! Shift-down 0x2A, 0x1E, 0x9E, Shift-up 0xAA, and Ctrl-C becomes 0x1D 0x2E 0xAE 0x9D. Arrow keys
//! arrive from a terminal as ANSI escape sequences (ESC [ A .. ESC [ D) and leave as "extended"
//! scancodes, prefixed with 0xE0.
//!
//! Set 1 is what a PC's i8042 hands the CPU by default (it translates the keyboard's own set 2),
//! and what every OS tutorial's scancode table is written for.

const LEFT_SHIFT: u8 = 0x2a;
const LEFT_CTRL: u8 = 0x1d;
const ESCAPE: u8 = 0x01;
const BACKSPACE: u8 = 0x0e;
const TAB: u8 = 0x0f;
const ENTER: u8 = 0x1c;
const BREAK: u8 = 0x80;
/// Prefix of the keys a PC/AT keyboard added (arrows, ...).
const EXTENDED: u8 = 0xe0;

/// The key that types `c` on a US keyboard, and whether Shift is needed.
fn key_for_character(c: u8) -> Option<(u8, bool)> {
    const ROW_DIGITS: &[u8] = b"1234567890-=";
    const ROW_DIGITS_SHIFTED: &[u8] = b"!@#$%^&*()_+";
    const ROW_Q: &[u8] = b"qwertyuiop[]";
    const ROW_Q_SHIFTED: &[u8] = b"QWERTYUIOP{}";
    const ROW_A: &[u8] = b"asdfghjkl;'`";
    const ROW_A_SHIFTED: &[u8] = b"ASDFGHJKL:\"~";
    const ROW_Z: &[u8] = b"\\zxcvbnm,./";
    const ROW_Z_SHIFTED: &[u8] = b"|ZXCVBNM<>?";
    // Each row's first scancode (the rows are consecutive codes on the keyboard).
    let rows: [(&[u8], &[u8], u8); 4] = [
        (ROW_DIGITS, ROW_DIGITS_SHIFTED, 0x02),
        (ROW_Q, ROW_Q_SHIFTED, 0x10),
        (ROW_A, ROW_A_SHIFTED, 0x1e),
        (ROW_Z, ROW_Z_SHIFTED, 0x2b),
    ];
    if c == b' ' {
        return Some((0x39, false));
    }
    rows.iter().find_map(|&(plain, shifted, first)| {
        if let Some(i) = plain.iter().position(|&k| k == c) {
            Some((first + i as u8, false))
        } else {
            shifted
                .iter()
                .position(|&k| k == c)
                .map(|i| (first + i as u8, true))
        }
    })
}

/// Where the encoder is inside an escape sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Escape {
    #[default]
    None,
    /// After ESC.
    Started,
    /// After ESC [ (or ESC O, the "application cursor keys" form).
    Bracket(u8),
}

/// Turns a stream of terminal bytes into scancodes. Keeps state across calls, because an escape
/// sequence may in principle be split; [`KeyboardEncoder::end_of_chunk`] settles a lone ESC.
#[derive(Debug, Default)]
pub struct KeyboardEncoder {
    escape: Escape,
    /// The last byte was '\r': a following '\n' is the same Enter (CR LF line ends).
    after_cr: bool,
}

impl KeyboardEncoder {
    pub fn new() -> KeyboardEncoder {
        KeyboardEncoder::default()
    }

    /// Appends the scancodes for `bytes` to `out`.
    pub fn encode(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        for &byte in bytes {
            self.encode_byte(byte, out);
        }
    }

    /// A terminal sends an escape sequence in one write: an ESC still pending at the end of what
    /// arrived together was the Escape key itself.
    pub fn end_of_chunk(&mut self, out: &mut Vec<u8>) {
        match std::mem::take(&mut self.escape) {
            Escape::None => {}
            Escape::Started => press(ESCAPE, out),
            Escape::Bracket(second) => {
                press(ESCAPE, out);
                self.encode_byte(second, out);
            }
        }
    }

    fn encode_byte(&mut self, byte: u8, out: &mut Vec<u8>) {
        match self.escape {
            Escape::Started if byte == b'[' || byte == b'O' => {
                self.escape = Escape::Bracket(byte);
                return;
            }
            Escape::Started => {
                self.escape = Escape::None;
                press(ESCAPE, out);
            }
            Escape::Bracket(second) => {
                self.escape = Escape::None;
                let arrow = match byte {
                    b'A' => Some(0x48), // up
                    b'B' => Some(0x50), // down
                    b'C' => Some(0x4d), // right
                    b'D' => Some(0x4b), // left
                    _ => None,
                };
                match arrow {
                    Some(code) => out.extend_from_slice(&[EXTENDED, code, EXTENDED, code | BREAK]),
                    None => {
                        // Not a sequence we know: type what came, as keys.
                        press(ESCAPE, out);
                        self.encode_byte(second, out);
                        self.encode_byte(byte, out);
                    }
                }
                return;
            }
            Escape::None => {}
        }
        let after_cr = std::mem::replace(&mut self.after_cr, byte == b'\r');
        match byte {
            0x1b => self.escape = Escape::Started,
            b'\n' if after_cr => {}
            b'\r' | b'\n' => press(ENTER, out),
            b'\t' => press(TAB, out),
            0x08 | 0x7f => press(BACKSPACE, out),
            // Ctrl-A .. Ctrl-Z (except the ones above, which have their own keys).
            0x01..=0x1a => with_modifier(LEFT_CTRL, (b'a' + byte - 1) as char, out),
            _ => {
                if let Some((key, shift)) = key_for_character(byte) {
                    if shift {
                        out.push(LEFT_SHIFT);
                    }
                    press(key, out);
                    if shift {
                        out.push(LEFT_SHIFT | BREAK);
                    }
                }
                // Anything else (other control bytes, non-ASCII) has no key on a US keyboard.
            }
        }
    }
}

fn press(key: u8, out: &mut Vec<u8>) {
    out.extend_from_slice(&[key, key | BREAK]);
}

fn with_modifier(modifier: u8, letter: char, out: &mut Vec<u8>) {
    if let Some((key, _)) = key_for_character(letter as u8) {
        out.push(modifier);
        press(key, out);
        out.push(modifier | BREAK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = KeyboardEncoder::new();
        let mut out = Vec::new();
        encoder.encode(bytes, &mut out);
        encoder.end_of_chunk(&mut out);
        out
    }

    #[test]
    fn letters_digits_and_shift() {
        assert_eq!(encode(b"a"), [0x1e, 0x9e]);
        assert_eq!(encode(b"A"), [0x2a, 0x1e, 0x9e, 0xaa]);
        assert_eq!(encode(b"1"), [0x02, 0x82]);
        assert_eq!(encode(b"0"), [0x0b, 0x8b]);
        assert_eq!(encode(b"!"), [0x2a, 0x02, 0x82, 0xaa]);
        assert_eq!(encode(b"z/"), [0x2c, 0xac, 0x35, 0xb5]);
        assert_eq!(encode(b" "), [0x39, 0xb9]);
        assert_eq!(encode(b"\\|"), [0x2b, 0xab, 0x2a, 0x2b, 0xab, 0xaa]);
    }

    #[test]
    fn control_keys() {
        assert_eq!(encode(b"\n"), [0x1c, 0x9c]);
        assert_eq!(encode(b"\r\n"), [0x1c, 0x9c]);
        assert_eq!(encode(b"\t"), [0x0f, 0x8f]);
        assert_eq!(encode(b"\x7f"), [0x0e, 0x8e]);
        assert_eq!(encode(b"\x03"), [0x1d, 0x2e, 0xae, 0x9d]); // Ctrl-C
        assert_eq!(encode(b"\x1b"), [0x01, 0x81]);
    }

    #[test]
    fn arrows_from_escape_sequences() {
        assert_eq!(encode(b"\x1b[A"), [0xe0, 0x48, 0xe0, 0xc8]);
        assert_eq!(encode(b"\x1b[D"), [0xe0, 0x4b, 0xe0, 0xcb]);
        assert_eq!(encode(b"\x1bOB"), [0xe0, 0x50, 0xe0, 0xd0]);
        // ESC then a letter: the Escape key, then the letter.
        assert_eq!(encode(b"\x1bq"), [0x01, 0x81, 0x10, 0x90]);
    }
}
