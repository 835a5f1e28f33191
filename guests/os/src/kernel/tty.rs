//! The terminal: the line discipline between the keyboard and `read`.
//!
//! The keyboard interrupt puts characters into a ring buffer, nothing more. Editing happens
//! when a process reads: characters are taken from the ring, echoed, Backspace (or DEL) erases
//! one with "\b \b", Enter ends the line, and `read` returns the line with its '\n'. Echoing at
//! read time rather than at key time keeps a scripted session's output in order: keys typed
//! ahead (or piped in all at once) appear when the program asks for them, after its prompt.
//!
//! The end of input (keyboard.rs) ends the line being typed, and then every `read` returns 0.
//! At a terminal, Ctrl-D on an empty line does the same once, as on Unix.

use crate::cell::KernelCell;
use crate::console::Out;
use crate::keyboard;

const RING_SIZE: usize = 1024;
/// The longest line; further characters are dropped (not echoed) until Enter or Backspace.
const LINE_MAX: usize = 255;
const CTRL_D: u8 = 0x04;

struct Tty {
    ring: [u8; RING_SIZE],
    head: usize,
    count: usize,
    input_ended: bool,
    /// The line being edited, then (once `complete`) being handed out from `taken` on.
    line: [u8; LINE_MAX + 1],
    len: usize,
    complete: bool,
    taken: usize,
    /// Ctrl-D on an empty line: the next read returns 0.
    end_of_file: bool,
}

static TTY: KernelCell<Tty> = KernelCell::new(Tty {
    ring: [0; RING_SIZE],
    head: 0,
    count: 0,
    input_ended: false,
    line: [0; LINE_MAX + 1],
    len: 0,
    complete: false,
    taken: 0,
    end_of_file: false,
});

/// Called by the keyboard driver.
pub fn has_room() -> bool {
    TTY.get().count < RING_SIZE
}

pub fn push(character: u8) {
    let tty = TTY.get();
    if tty.count < RING_SIZE {
        tty.ring[(tty.head + tty.count) % RING_SIZE] = character;
        tty.count += 1;
    }
}

pub fn end_of_input() {
    TTY.get().input_ended = true;
}

/// Copies up to `capacity` bytes of the next line to `buffer` (already checked: writable user
/// memory of the calling process). `Some(0)`: end of input. `None`: the line is not complete
/// yet; the caller blocks, and tries again after the next key.
pub fn read(buffer: *mut u8, capacity: usize) -> Option<usize> {
    loop {
        TTY.get().edit();
        let tty = TTY.get();
        if tty.complete || tty.end_of_file || !keyboard::stalled() {
            break;
        }
        // The ring was full and keys are still waiting in the controller: take them now.
        keyboard::poll();
    }
    let tty = TTY.get();
    if tty.end_of_file {
        tty.end_of_file = false;
        return Some(0);
    }
    if !tty.complete {
        if !tty.input_ended {
            return None;
        }
        if tty.len == 0 {
            return Some(0);
        }
        tty.complete = true; // the last line, without a '\n'
    }
    let n = capacity.min(tty.len - tty.taken);
    // SAFETY: the system call checked `buffer` for `capacity` bytes.
    unsafe { core::ptr::copy_nonoverlapping(tty.line.as_ptr().add(tty.taken), buffer, n) };
    tty.taken += n;
    if tty.taken == tty.len {
        tty.len = 0;
        tty.taken = 0;
        tty.complete = false;
    }
    Some(n)
}

impl Tty {
    /// Edits the line with the characters in the ring, until it is complete or the ring is
    /// empty. The echo goes out in one write.
    fn edit(&mut self) {
        let mut echo = Out::new();
        while !self.complete && !self.end_of_file && self.count > 0 {
            let character = self.ring[self.head];
            self.head = (self.head + 1) % RING_SIZE;
            self.count -= 1;
            match character {
                b'\n' | b'\r' => {
                    echo.s(b"\n");
                    self.line[self.len] = b'\n'; // there is always room for it
                    self.len += 1;
                    self.complete = true;
                }
                0x08 | 0x7f if self.len > 0 => {
                    self.len -= 1;
                    echo.s(b"\x08 \x08");
                }
                CTRL_D if self.len == 0 => self.end_of_file = true,
                CTRL_D => self.complete = true,
                0x20..=0x7e if self.len < LINE_MAX => {
                    self.line[self.len] = character;
                    self.len += 1;
                    echo.s(&[character]);
                }
                _ => {} // other control keys, or the line is full
            }
        }
    }
}
