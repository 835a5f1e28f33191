//! VGA text mode: 80 columns by 25 rows of character cells in guest RAM at 0xB8000, two bytes
//! each (the character, then its attribute: background colour in bits 4-6, foreground in bits
//! 0-3), and the cursor, which the guest moves through the CRT controller's registers 0x0E and
//! 0x0F (index at port 0x3D4, data at 0x3D5) and hides with bit 5 of register 0x0A.
//!
//! Writes to the buffer are plain memory writes: they cost no VM exit. Only the cursor's
//! registers are a device. The display view redraws the screen when KVM's dirty log says the
//! buffer changed (`super::DisplayWatch`); `--screen-dump FILE` reads it at the end of the run
//! and writes it as text ([`Screen::dump`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::devices::bus::{BusDevice, BusRange, IoAction};

/// Where the text buffer is in guest-physical memory.
pub const TEXT_BUFFER: u64 = crate::arch::x86::layout::VGA_TEXT_WINDOW;
pub const COLUMNS: usize = 80;
pub const ROWS: usize = 25;
/// The CRT controller's index and data ports (colour mode).
pub const CRTC_PORTS: BusRange = BusRange::new(0x3d4, 2);

/// CRT controller registers: cursor start (bit 5: cursor off), and the cursor's cell, high and
/// low byte.
const CURSOR_START: usize = 0x0a;
const CURSOR_HIGH: usize = 0x0e;
const CURSOR_LOW: usize = 0x0f;
const CURSOR_OFF: u8 = 1 << 5;
/// The CRT controller has 0x19 registers (0x00 to 0x18).
const REGISTERS: usize = 0x19;

/// The cursor as the guest left it, readable from other threads: the cell (0 to 1999) in the low
/// 16 bits, bit 16 set when the cursor is off.
#[derive(Debug, Default)]
pub struct Cursor(AtomicU32);

impl Cursor {
    /// The cursor's row and column, or `None` when the guest turned it off or put it past the
    /// last cell.
    pub fn position(&self) -> Option<(usize, usize)> {
        let value = self.0.load(Ordering::Acquire);
        let cell = (value & 0xffff) as usize;
        (value & (1 << 16) == 0 && cell < COLUMNS * ROWS)
            .then_some((cell / COLUMNS, cell % COLUMNS))
    }
}

/// The CRT controller at 0x3D4/0x3D5: only what the cursor needs, every register readable
/// back.
pub struct CrtController {
    index: u8,
    registers: [u8; REGISTERS],
    cursor: Arc<Cursor>,
}

impl CrtController {
    pub fn new(cursor: Arc<Cursor>) -> CrtController {
        CrtController {
            index: 0,
            registers: [0; REGISTERS],
            cursor,
        }
    }

    fn publish_cursor(&self) {
        let cell =
            u32::from(self.registers[CURSOR_HIGH]) << 8 | u32::from(self.registers[CURSOR_LOW]);
        let off = u32::from(self.registers[CURSOR_START] & CURSOR_OFF != 0) << 16;
        self.cursor.0.store(cell | off, Ordering::Release);
    }
}

impl BusDevice for CrtController {
    fn name(&self) -> &'static str {
        "vga-crtc"
    }

    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            0 => self.index,
            _ => *self.registers.get(usize::from(self.index)).unwrap_or(&0xff),
        };
        data.fill(value);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> IoAction {
        let Some(&byte) = data.first() else {
            return IoAction::Continue;
        };
        match (offset, data) {
            // A 16-bit `out %ax, $0x3d4`: index in AL, data in AH (a common shortcut).
            (0, [index, value, ..]) => {
                self.index = *index;
                if let Some(register) = self.registers.get_mut(usize::from(*index)) {
                    *register = *value;
                }
            }
            (0, _) => self.index = byte,
            _ => {
                if let Some(register) = self.registers.get_mut(usize::from(self.index)) {
                    *register = byte;
                }
            }
        }
        self.publish_cursor();
        IoAction::Continue
    }
}

/// Code page 437, the PC's character set: what the glyphs of bytes 0x00-0x1F and 0x7F-0xFF look
/// like (a VGA's font draws every byte; 0x20-0x7E are ASCII).
const CP437_LOW: &str = " ☺☻♥♦♣♠•◘○◙♂♀♪♫☼►◄↕‼¶§▬↨↑↓→←∟↔▲▼";
const CP437_HIGH: &str = "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u{a0}";

/// The character a VGA shows for `byte` (NUL shows as a blank).
pub fn cp437(byte: u8) -> char {
    match byte {
        0x20..=0x7e => byte as char,
        0x7f => '⌂',
        0x00..=0x1f => CP437_LOW.chars().nth(usize::from(byte)).unwrap_or(' '),
        _ => CP437_HIGH
            .chars()
            .nth(usize::from(byte - 0x80))
            .unwrap_or(' '),
    }
}

/// The VGA's 16 colours (an attribute's 4-bit foreground, or background with blink off) as
/// (red, green, blue): the standard palette, brown and all.
pub const PALETTE: [(u8, u8, u8); 16] = [
    (0x00, 0x00, 0x00), // black
    (0x00, 0x00, 0xaa), // blue
    (0x00, 0xaa, 0x00), // green
    (0x00, 0xaa, 0xaa), // cyan
    (0xaa, 0x00, 0x00), // red
    (0xaa, 0x00, 0xaa), // magenta
    (0xaa, 0x55, 0x00), // brown
    (0xaa, 0xaa, 0xaa), // light grey
    (0x55, 0x55, 0x55), // dark grey
    (0x55, 0x55, 0xff), // light blue
    (0x55, 0xff, 0x55), // light green
    (0x55, 0xff, 0xff), // light cyan
    (0xff, 0x55, 0x55), // light red
    (0xff, 0x55, 0xff), // light magenta
    (0xff, 0xff, 0x55), // yellow
    (0xff, 0xff, 0xff), // white
];

/// The text screen: each cell's character and attribute, and the cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screen {
    /// ROWS × COLUMNS cells, row by row: (character, attribute).
    cells: Vec<(u8, u8)>,
    cursor: Option<(usize, usize)>,
}

impl Screen {
    /// Reads the text buffer from guest memory (cells outside RAM read as blank).
    pub fn read(memory: &GuestMemoryMmap, cursor: &Cursor) -> Screen {
        let mut bytes = vec![0u8; COLUMNS * ROWS * 2];
        let _ = memory.read_slice(&mut bytes, GuestAddress(TEXT_BUFFER));
        Screen {
            cells: bytes.chunks(2).map(|cell| (cell[0], cell[1])).collect(),
            cursor: cursor.position(),
        }
    }

    /// The same cells with the cursor somewhere else.
    pub fn with_cursor(&self, cursor: Option<(usize, usize)>) -> Screen {
        Screen {
            cells: self.cells.clone(),
            cursor,
        }
    }

    /// The character and attribute at a row and column (inside the screen).
    pub fn cell(&self, row: usize, column: usize) -> (u8, u8) {
        self.cells[row * COLUMNS + column]
    }

    /// Where the cursor is, unless the guest hid it.
    pub fn cursor(&self) -> Option<(usize, usize)> {
        self.cursor
    }

    /// The screen as text: a heading with the cursor, the 25 rows of characters (trailing blanks
    /// removed; a NUL is a blank; bytes outside printable ASCII, CP437's graphics, as `?`), then
    /// the 25 rows of attributes, two hex digits per cell (background, foreground).
    pub fn dump(&self) -> String {
        let cursor = match self.cursor {
            Some((row, column)) => format!("cursor at row {row}, column {column}"),
            None => "cursor off".to_string(),
        };
        let mut text = format!("VGA text {COLUMNS}x{ROWS}, {cursor}\n");
        for row in self.cells.chunks(COLUMNS) {
            let line: String = row
                .iter()
                .map(|&(character, _)| match character {
                    0 => ' ',
                    0x20..=0x7e => character as char,
                    _ => '?',
                })
                .collect();
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text.push_str("attributes:\n");
        for row in self.cells.chunks(COLUMNS) {
            for &(_, attribute) in row {
                text.push_str(&format!("{attribute:02x}"));
            }
            text.push('\n');
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_follows_registers_0e_0f_and_0a() {
        let cursor = Arc::new(Cursor::default());
        let mut crtc = CrtController::new(Arc::clone(&cursor));
        // Row 2, column 5: cell 165 = 0x00a5.
        crtc.write(0, &[0x0e]);
        crtc.write(1, &[0x00]);
        crtc.write(0, &[0x0f, 0xa5]);
        assert_eq!(cursor.position(), Some((2, 5)));
        let mut data = [0u8];
        crtc.read(1, &mut data);
        assert_eq!(data, [0xa5]);
        crtc.write(0, &[0x0a]);
        crtc.write(1, &[0x20]);
        assert_eq!(cursor.position(), None);
    }

    #[test]
    fn code_page_437_has_a_glyph_for_every_byte() {
        assert_eq!(CP437_LOW.chars().count(), 32);
        assert_eq!(CP437_HIGH.chars().count(), 128);
        assert_eq!(cp437(0), ' ');
        assert_eq!(cp437(1), '☺');
        assert_eq!(cp437(b'A'), 'A');
        assert_eq!(cp437(0x80), 'Ç');
        assert_eq!(cp437(0xb0), '░');
        assert_eq!(cp437(0xc9), '╔');
        assert_eq!(cp437(0xdb), '█');
        assert_eq!(cp437(0xfe), '■');
    }

    #[test]
    fn a_dump_has_the_characters_then_the_attributes() {
        let mut cells = vec![(0u8, 0x07u8); COLUMNS * ROWS];
        cells[0] = (b'H', 0x1f);
        cells[1] = (b'i', 0x1f);
        cells[COLUMNS] = (0xdb, 0x4e);
        let screen = Screen {
            cells,
            cursor: Some((1, 1)),
        };
        let dump = screen.dump();
        let lines: Vec<&str> = dump.lines().collect();
        assert_eq!(lines[0], "VGA text 80x25, cursor at row 1, column 1");
        assert_eq!(lines[1], "Hi");
        assert_eq!(lines[2], "?");
        assert_eq!(lines[3], "");
        assert_eq!(lines[26], "attributes:");
        assert_eq!(&lines[27][..6], "1f1f07");
        assert_eq!(&lines[28][..4], "4e07");
        assert_eq!(lines.len(), 1 + ROWS + 1 + ROWS);
    }
}
