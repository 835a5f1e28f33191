//! The i8042 keyboard: scancodes in, characters out to the terminal (tty.rs).
//!
//! Each key press and release raises IRQ 1 with one scancode (set 1: a press is the key's
//! code, its release the same code with bit 7 set) waiting in port 0x60; bit 0 of the status
//! port 0x64 says a byte is waiting. We track Shift and Ctrl, and turn the other keys into
//! ASCII with two tables (US layout).
//!
//! **End of input.** A real keyboard never ends, but mini-kvm's input does: its stdin may be a
//! pipe. mini-kvm shows that as the keyboard lock ("inhibit") switch of the PC/AT: status bit 4
//! drops to 0 once the last key has been delivered, and IRQ 1 fires once more (docs/os.md).

use crate::cell::KernelCell;
use crate::cpu::inb;
use crate::tty;

const DATA_PORT: u16 = 0x60;
const STATUS_PORT: u16 = 0x64;
const STATUS_OUTPUT_FULL: u8 = 1 << 0;
/// 1: the keyboard may send; 0: locked (here: mini-kvm's input has ended).
const STATUS_NOT_INHIBITED: u8 = 1 << 4;

const RELEASED: u8 = 0x80;
const EXTENDED_PREFIX: u8 = 0xe0;
const LEFT_SHIFT: u8 = 0x2a;
const RIGHT_SHIFT: u8 = 0x36;
const CTRL: u8 = 0x1d;

/// Scancode → character, without and with Shift (0: no character). Backspace is 0x08, Enter
/// is '\n'.
const PLAIN: &[u8; 0x3a] =
    b"\0\x1b1234567890-=\x08\tqwertyuiop[]\n\0asdfghjkl;'`\0\\zxcvbnm,./\0*\0 ";
const SHIFTED: &[u8; 0x3a] =
    b"\0\x1b!@#$%^&*()_+\x08\tQWERTYUIOP{}\n\0ASDFGHJKL:\"~\0|ZXCVBNM<>?\0*\0 ";

struct Keyboard {
    shift: bool,
    ctrl: bool,
    /// The last byte was 0xE0: the next one is an extended key (arrows...), which we ignore.
    extended: bool,
    /// We left a byte in the controller because the terminal's buffer was full.
    stalled: bool,
}

static KEYBOARD: KernelCell<Keyboard> = KernelCell::new(Keyboard {
    shift: false,
    ctrl: false,
    extended: false,
    stalled: false,
});

/// Takes the keys already waiting. A PC driver would throw them away as noise from the boot,
/// but here they are the user's input: mini-kvm hands the keyboard its stdin from the guest's
/// first access to the controller on, and a pipe's first keys arrive at once. Called after the
/// PIC is set up, so that the interrupt of any later key is not lost.
pub fn init() {
    poll();
}

/// IRQ 1: takes every waiting scancode.
pub fn interrupt() {
    poll();
}

/// Takes every waiting scancode, while the terminal has room for more characters; notices the
/// end of input.
pub fn poll() {
    let keyboard = KEYBOARD.get();
    loop {
        let status = inb(STATUS_PORT);
        if status & STATUS_OUTPUT_FULL == 0 {
            if status & STATUS_NOT_INHIBITED == 0 {
                tty::end_of_input();
            }
            keyboard.stalled = false;
            return;
        }
        if !tty::has_room() {
            // Leave it there: the terminal polls again once a reader has made room.
            keyboard.stalled = true;
            return;
        }
        let code = inb(DATA_PORT);
        if let Some(character) = keyboard.translate(code) {
            tty::push(character);
        }
    }
}

/// Did we leave keys in the controller?
pub fn stalled() -> bool {
    KEYBOARD.get().stalled
}

impl Keyboard {
    fn translate(&mut self, code: u8) -> Option<u8> {
        if code == EXTENDED_PREFIX {
            self.extended = true;
            return None;
        }
        if core::mem::take(&mut self.extended) {
            // Right Ctrl is E0 1D; the rest (arrows, ...) has no character.
            if code & !RELEASED == CTRL {
                self.ctrl = code & RELEASED == 0;
            }
            return None;
        }
        let pressed = code & RELEASED == 0;
        let key = code & !RELEASED;
        match key {
            LEFT_SHIFT | RIGHT_SHIFT => self.shift = pressed,
            CTRL => self.ctrl = pressed,
            _ if pressed => {
                let table = if self.shift { SHIFTED } else { PLAIN };
                let character = *table.get(usize::from(key))?;
                if character == 0 {
                    return None;
                }
                // Ctrl and a letter: the control character (Ctrl-D = 4).
                if self.ctrl && character.is_ascii_alphabetic() {
                    return Some(character.to_ascii_lowercase() & 0x1f);
                }
                return Some(character);
            }
            _ => {}
        }
        None
    }
}
