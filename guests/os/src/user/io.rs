//! Output and line input for the programs.
//!
//! [`Out`] collects text and writes it with one system call (one VM exit) when flushed, when
//! full, or when dropped; programs build a whole screen in one. [`read_line`] reads one line.

use crate::sys;

/// Text for one system call (src/out.rs).
pub type Out = crate::out::Out<512>;

impl Out {
    pub fn new() -> Out {
        Out::to(|bytes| {
            sys::write(bytes);
        })
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
