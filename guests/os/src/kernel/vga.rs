//! The VGA text screen, when mini-kvm gives the machine a display (`--display`, `--screen-dump`):
//! the kernel writes everything it prints there too, as a PC kernel prints to the screen.
//!
//! The loader says whether there is one: with a display, mini-kvm's multiboot information has a
//! framebuffer of type 2, "EGA text" (flag 12; GRUB does the same), at 0xb8000, 80x25 cells of a
//! character and an attribute byte. Writing a cell is a plain memory write, no VM exit; moving the
//! cursor takes four `out`s to the CRT controller (ports 0x3d4/0x3d5), once per write.

use crate::cell::KernelCell;
use crate::cpu::outb;

const COLUMNS: usize = 80;
const ROWS: usize = 25;
/// Light grey on black: what a PC's screen starts with.
const ATTRIBUTE: u16 = 0x07 << 8;
const CRTC_INDEX: u16 = 0x3d4;
const CRTC_DATA: u16 = 0x3d5;
const CURSOR_HIGH: u8 = 0x0e;
const CURSOR_LOW: u8 = 0x0f;

struct Screen {
    /// The text buffer's address (identity-mapped), or 0 without a display.
    cells: u64,
    row: usize,
    column: usize,
}

static SCREEN: KernelCell<Screen> = KernelCell::new(Screen {
    cells: 0,
    row: 0,
    column: 0,
});

/// Starts the screen at `address` (the multiboot information's EGA text framebuffer): blank,
/// cursor at the top left.
pub fn init(address: u64) {
    let screen = SCREEN.get();
    screen.cells = address;
    for cell in 0..COLUMNS * ROWS {
        screen.put(cell, b' ');
    }
    screen.move_cursor();
}

/// Prints `bytes` on the screen (nothing without a display): newlines, backspaces and the
/// printable ASCII characters; the screen scrolls up at the bottom.
pub fn write(bytes: &[u8]) {
    let screen = SCREEN.get();
    if screen.cells == 0 {
        return;
    }
    for &byte in bytes {
        match byte {
            b'\n' => screen.new_line(),
            0x08 => {
                if screen.column > 0 {
                    screen.column -= 1;
                }
            }
            0x20..=0x7e => {
                screen.put(screen.row * COLUMNS + screen.column, byte);
                screen.column += 1;
                if screen.column == COLUMNS {
                    screen.new_line();
                }
            }
            _ => {}
        }
    }
    screen.move_cursor();
}

impl Screen {
    fn put(&self, cell: usize, character: u8) {
        // SAFETY: `cell` < COLUMNS * ROWS, inside the 4000-byte buffer the loader described.
        unsafe {
            core::ptr::write_volatile(
                (self.cells as *mut u16).add(cell),
                ATTRIBUTE | u16::from(character),
            )
        };
    }

    fn new_line(&mut self) {
        self.column = 0;
        if self.row + 1 < ROWS {
            self.row += 1;
            return;
        }
        // Scroll: rows 1-24 move up one, the last row is cleared.
        let cells = self.cells as *mut u16;
        // SAFETY: both ranges lie inside the buffer; `copy` allows them to overlap.
        unsafe { core::ptr::copy(cells.add(COLUMNS), cells, COLUMNS * (ROWS - 1)) };
        for column in 0..COLUMNS {
            self.put((ROWS - 1) * COLUMNS + column, b' ');
        }
    }

    fn move_cursor(&self) {
        let cell = (self.row * COLUMNS + self.column) as u16;
        outb(CRTC_INDEX, CURSOR_HIGH);
        outb(CRTC_DATA, (cell >> 8) as u8);
        outb(CRTC_INDEX, CURSOR_LOW);
        outb(CRTC_DATA, cell as u8);
    }
}
