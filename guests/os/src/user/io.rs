//! Output and line input for the programs.
//!
//! [`Out`] collects text and writes it with one system call (one VM exit) when flushed, when
//! full, or when dropped; programs build a whole screen in one. [`read_line`] reads one line.

use crate::num;
use crate::sys;

pub struct Out {
    buf: [u8; 512],
    len: usize,
}

impl Out {
    pub fn new() -> Out {
        Out {
            buf: [0; 512],
            len: 0,
        }
    }

    pub fn s(&mut self, text: &[u8]) -> &mut Out {
        for &byte in text {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = byte;
            self.len += 1;
        }
        self
    }

    pub fn u(&mut self, n: u64) -> &mut Out {
        let mut digits = [0; 20];
        self.s(num::decimal(n, &mut digits))
    }

    pub fn i(&mut self, n: i64) -> &mut Out {
        if n < 0 {
            self.s(b"-");
        }
        self.u(n.unsigned_abs())
    }

    /// `n` right-aligned in `width` columns.
    pub fn u_right(&mut self, n: u64, width: usize) -> &mut Out {
        let mut digits = [0; 20];
        let text = num::decimal(n, &mut digits);
        for _ in text.len()..width {
            self.s(b" ");
        }
        self.s(text)
    }

    /// `text` left-aligned in `width` columns.
    pub fn s_left(&mut self, text: &[u8], width: usize) -> &mut Out {
        self.s(text);
        for _ in text.len()..width {
            self.s(b" ");
        }
        self
    }

    pub fn flush(&mut self) -> &mut Out {
        if self.len > 0 {
            sys::write(&self.buf[..self.len]);
            self.len = 0;
        }
        self
    }
}

impl Drop for Out {
    fn drop(&mut self) {
        self.flush();
    }
}

pub fn print(text: &[u8]) {
    sys::write(text);
}

/// The longest line a program keeps: 63 characters, as in the original 1K OS.
pub const LINE_MAX: usize = 63;

/// One line of input, without its '\n'.
pub struct Line {
    buf: [u8; LINE_MAX],
    len: usize,
    /// The line was longer than LINE_MAX: the rest was dropped.
    pub truncated: bool,
}

impl Line {
    pub fn text(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Reads one line (the terminal echoes it and handles Backspace); `None` at end of input.
pub fn read_line() -> Option<Line> {
    let mut line = Line {
        buf: [0; LINE_MAX],
        len: 0,
        truncated: false,
    };
    let mut chunk = [0u8; 64];
    let mut got_any = false;
    loop {
        let n = sys::read(&mut chunk);
        if n <= 0 {
            return got_any.then_some(line);
        }
        got_any = true;
        for &byte in &chunk[..n as usize] {
            if byte == b'\n' {
                return Some(line);
            }
            if line.len < LINE_MAX {
                line.buf[line.len] = byte;
                line.len += 1;
            } else {
                line.truncated = true;
            }
        }
    }
}
