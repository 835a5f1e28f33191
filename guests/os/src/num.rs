//! Numbers as text, without `core::fmt` (whose precompiled code uses SSE2, which our hosts'
//! KVM cannot emulate: docs/testing.md, "Why there is a rig"). Included by the kernel and the user programs (`#[path]`).

#![allow(dead_code)]

/// `n` in decimal, in the end of `buf`.
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[start..];
        }
    }
}

/// `n` as `0x` and 16 hex digits.
pub fn hex(n: u64, buf: &mut [u8; 18]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    buf[0] = b'0';
    buf[1] = b'x';
    for i in 0..16 {
        buf[17 - i] = DIGITS[((n >> (4 * i)) & 0xf) as usize];
    }
    &buf[..]
}
