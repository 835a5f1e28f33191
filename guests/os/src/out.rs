//! Text put together in a fixed buffer and written in one piece: one VM exit for a whole line or
//! screen instead of one per number. Shared by the kernel, which writes with the WRITE
//! hypercall, and the user programs, which write with the `write` system call: each gives its
//! writer to [`Out::to`]. (Each of the two programs uses part of it.)
#![allow(dead_code)]

use crate::num;

pub struct Out<const N: usize> {
    buf: [u8; N],
    len: usize,
    write: fn(&[u8]),
}

impl<const N: usize> Out<N> {
    /// An empty buffer that `write` empties when it is flushed, full, or dropped.
    pub fn to(write: fn(&[u8])) -> Self {
        Out {
            buf: [0; N],
            len: 0,
            write,
        }
    }

    pub fn s(&mut self, text: &[u8]) -> &mut Self {
        for &byte in text {
            if self.len == N {
                self.flush();
            }
            self.buf[self.len] = byte;
            self.len += 1;
        }
        self
    }

    /// `n` in decimal.
    pub fn u(&mut self, n: u64) -> &mut Self {
        let mut digits = [0; 20];
        self.s(num::decimal(n, &mut digits))
    }

    /// `n` in decimal, with a minus sign when negative.
    pub fn i(&mut self, n: i64) -> &mut Self {
        if n < 0 {
            self.s(b"-");
        }
        self.u(n.unsigned_abs())
    }

    /// `n` in hexadecimal, with 0x.
    pub fn hex(&mut self, n: u64) -> &mut Self {
        let mut digits = [0; 18];
        self.s(num::hex(n, &mut digits))
    }

    /// `n` right-aligned in `width` columns.
    pub fn u_right(&mut self, n: u64, width: usize) -> &mut Self {
        let mut digits = [0; 20];
        let text = num::decimal(n, &mut digits);
        for _ in text.len()..width {
            self.s(b" ");
        }
        self.s(text)
    }

    /// `text` left-aligned in `width` columns.
    pub fn s_left(&mut self, text: &[u8], width: usize) -> &mut Self {
        self.s(text);
        for _ in text.len()..width {
            self.s(b" ");
        }
        self
    }

    pub fn flush(&mut self) -> &mut Self {
        if self.len > 0 {
            (self.write)(&self.buf[..self.len]);
            self.len = 0;
        }
        self
    }
}

impl<const N: usize> Drop for Out<N> {
    fn drop(&mut self) {
        self.flush();
    }
}
