//! A linear framebuffer through the Bochs VBE "dispi" interface, the one QEMU's `-vga std`,
//! Bochs and VirtualBox give guests and the one hobby OS tutorials program: an index register at
//! port 0x1CE and a data register at 0x1CF, both 16 bits wide. A guest writes the resolution and
//! the colour depth, sets the enable register, and then draws by writing pixels to memory at
//! [`FRAMEBUFFER_ADDRESS`], in the MMIO hole: like the text buffer, drawing costs no VM exit.
//!
//! The registers (Bochs' `vbe.h`):
//!
//! | index | register | here |
//! |---|---|---|
//! | 0 | ID | reads 0xB0C5 (interface version 5) |
//! | 1, 2 | X and Y resolution | 1 to 1920, 1 to 1200 |
//! | 3 | bits per pixel | 16 (RGB 5:6:5), 24 or 32 (B, G, R, unused) |
//! | 4 | enable | bit 0 on, bit 1 "read the maximum resolution" instead, bit 7 keep memory |
//! | 5 | bank | 0 (the linear framebuffer needs no banks) |
//! | 6, 7 | virtual width and height | the line length in pixels |
//! | 8, 9 | X and Y offset | where the visible screen starts |
//! | 10 | video memory in 64 KiB units | 256 (16 MiB) |

use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::x86::layout::{FRAMEBUFFER_ADDRESS, FRAMEBUFFER_SIZE};
use crate::devices::bus::{BusDevice, BusRange, IoAction};

/// The index port (0x1CE) and the data port (0x1CF).
pub const DISPI_PORTS: BusRange = BusRange::new(0x1ce, 2);

const INDEX_ID: usize = 0;
const INDEX_XRES: usize = 1;
const INDEX_YRES: usize = 2;
const INDEX_BPP: usize = 3;
const INDEX_ENABLE: usize = 4;
const INDEX_VIRT_WIDTH: usize = 6;
const INDEX_VIRT_HEIGHT: usize = 7;
const INDEX_X_OFFSET: usize = 8;
const INDEX_Y_OFFSET: usize = 9;
const INDEX_VIDEO_MEMORY_64K: usize = 10;
const REGISTERS: usize = 11;

/// What the ID register reads: the newest interface version.
pub const DISPI_ID: u16 = 0xb0c5;
const ENABLED: u16 = 1 << 0;
const GET_CAPABILITIES: u16 = 1 << 1;
const NO_CLEAR_MEMORY: u16 = 1 << 7;
/// The largest mode a guest may set (what the capabilities bit reads).
pub const MAX_WIDTH: u16 = 1920;
pub const MAX_HEIGHT: u16 = 1200;
pub const MAX_BPP: u16 = 32;

/// A graphics mode the guest has switched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphicsMode {
    pub width: u32,
    pub height: u32,
    /// 16, 24 or 32.
    pub bits_per_pixel: u32,
    /// Bytes from one line to the next.
    pub pitch: u32,
    /// Where the visible screen starts, in bytes from the framebuffer's start.
    pub start: u64,
}

impl GraphicsMode {
    pub fn bytes_per_pixel(&self) -> u32 {
        self.bits_per_pixel / 8
    }

    /// The bytes the visible screen spans in the framebuffer, from `start`.
    pub fn visible_bytes(&self) -> u64 {
        u64::from(self.pitch) * u64::from(self.height.saturating_sub(1))
            + u64::from(self.width) * u64::from(self.bytes_per_pixel())
    }

    /// The colour of the pixel whose bytes begin `pixel`, as (red, green, blue).
    pub fn rgb(&self, pixel: &[u8]) -> (u8, u8, u8) {
        match (self.bits_per_pixel, pixel) {
            (16, [low, high, ..]) => {
                let value = u16::from_le_bytes([*low, *high]);
                // 5:6:5, each widened to 8 bits by repeating its top bits.
                let red = (value >> 11) as u8 & 0x1f;
                let green = (value >> 5) as u8 & 0x3f;
                let blue = value as u8 & 0x1f;
                (
                    red << 3 | red >> 2,
                    green << 2 | green >> 4,
                    blue << 3 | blue >> 2,
                )
            }
            (_, [blue, green, red, ..]) => (*red, *green, *blue),
            _ => (0, 0, 0),
        }
    }
}

/// The mode as the guest left it, readable from other threads (the display view, the
/// screenshot): `None` while the guest is in text mode.
pub type SharedMode = Arc<Mutex<Option<GraphicsMode>>>;

/// The dispi registers.
pub struct BochsVbe {
    index: u16,
    registers: [u16; REGISTERS],
    framebuffer: GuestMemoryMmap,
    mode: SharedMode,
}

impl BochsVbe {
    /// `framebuffer`: the memory at [`FRAMEBUFFER_ADDRESS`], cleared when a mode is set.
    pub fn new(framebuffer: GuestMemoryMmap, mode: SharedMode) -> BochsVbe {
        let mut registers = [0; REGISTERS];
        registers[INDEX_ID] = DISPI_ID;
        registers[INDEX_BPP] = 8;
        registers[INDEX_VIDEO_MEMORY_64K] = (FRAMEBUFFER_SIZE >> 16) as u16;
        BochsVbe {
            index: 0,
            registers,
            framebuffer,
            mode,
        }
    }

    /// Sets a mode as a kernel's multiboot header asks for it (the loader's job on a PC is the
    /// BIOS's): returns the mode, or `None` when the adapter cannot show it.
    pub fn set_mode(
        &mut self,
        width: u16,
        height: u16,
        bits_per_pixel: u16,
    ) -> Option<GraphicsMode> {
        self.registers[INDEX_XRES] = width;
        self.registers[INDEX_YRES] = height;
        self.registers[INDEX_BPP] = bits_per_pixel;
        self.write_register(INDEX_ENABLE, ENABLED);
        *self.mode.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read_register(&self, index: usize) -> u16 {
        let capabilities = self.registers[INDEX_ENABLE] & GET_CAPABILITIES != 0;
        match index {
            INDEX_XRES if capabilities => MAX_WIDTH,
            INDEX_YRES if capabilities => MAX_HEIGHT,
            INDEX_BPP if capabilities => MAX_BPP,
            _ => self.registers.get(index).copied().unwrap_or(0),
        }
    }

    fn write_register(&mut self, index: usize, value: u16) {
        match index {
            // Read-only: the version a guest writes is the one it hopes for; ours stays.
            INDEX_ID | INDEX_VIDEO_MEMORY_64K => return,
            INDEX_XRES => self.registers[index] = value.min(MAX_WIDTH),
            INDEX_YRES => self.registers[index] = value.min(MAX_HEIGHT),
            INDEX_ENABLE => {
                let was_enabled = self.registers[INDEX_ENABLE] & ENABLED != 0;
                self.registers[INDEX_ENABLE] = value;
                if value & ENABLED != 0 && !was_enabled {
                    // Switching a mode on resets the virtual screen to the visible one.
                    self.registers[INDEX_VIRT_WIDTH] = self.registers[INDEX_XRES];
                    self.registers[INDEX_VIRT_HEIGHT] = self.registers[INDEX_YRES];
                    self.registers[INDEX_X_OFFSET] = 0;
                    self.registers[INDEX_Y_OFFSET] = 0;
                    if value & NO_CLEAR_MEMORY == 0 {
                        self.clear_framebuffer();
                    }
                }
            }
            _ => {
                if let Some(register) = self.registers.get_mut(index) {
                    *register = value;
                }
            }
        }
        self.publish_mode();
    }

    /// The mode the registers describe, if the adapter is on and can show it.
    fn current_mode(&self) -> Option<GraphicsMode> {
        let r = &self.registers;
        let bits_per_pixel = u32::from(r[INDEX_BPP]);
        if r[INDEX_ENABLE] & ENABLED == 0 || ![16, 24, 32].contains(&bits_per_pixel) {
            return None;
        }
        let (width, height) = (u32::from(r[INDEX_XRES]), u32::from(r[INDEX_YRES]));
        let line_pixels = u32::from(r[INDEX_VIRT_WIDTH]).max(width);
        let pitch = line_pixels * bits_per_pixel / 8;
        let start = u64::from(r[INDEX_Y_OFFSET]) * u64::from(pitch)
            + u64::from(r[INDEX_X_OFFSET]) * u64::from(bits_per_pixel / 8);
        let mode = GraphicsMode {
            width,
            height,
            bits_per_pixel,
            pitch,
            start,
        };
        (width > 0 && height > 0 && start + mode.visible_bytes() <= FRAMEBUFFER_SIZE)
            .then_some(mode)
    }

    fn publish_mode(&self) {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner()) = self.current_mode();
    }

    /// Zeroes the bytes the new mode shows (not all 16 MiB: the host gives the framebuffer only
    /// the pages a guest touches).
    fn clear_framebuffer(&self) {
        let (width, height) = (
            u64::from(self.registers[INDEX_XRES]),
            u64::from(self.registers[INDEX_YRES]),
        );
        let bytes =
            (width * height * u64::from(self.registers[INDEX_BPP]) / 8).min(FRAMEBUFFER_SIZE);
        let zeros = [0u8; 4096];
        let mut offset = 0;
        while offset < bytes {
            let len = (bytes - offset).min(zeros.len() as u64) as usize;
            let _ = self
                .framebuffer
                .write_slice(&zeros[..len], GuestAddress(FRAMEBUFFER_ADDRESS + offset));
            offset += len as u64;
        }
    }
}

impl BusDevice for BochsVbe {
    fn name(&self) -> &'static str {
        "bochs-vbe"
    }

    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            0 => self.index,
            _ => self.read_register(usize::from(self.index)),
        };
        let bytes = value.to_le_bytes();
        for (byte, value) in data
            .iter_mut()
            .zip(bytes.iter().chain(std::iter::repeat(&0)))
        {
            *byte = *value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> IoAction {
        // A guest writes these ports 16 bits at a time (`outw`); a byte write sets the low byte.
        let value = match data {
            [low, high, ..] => u16::from_le_bytes([*low, *high]),
            [low] => u16::from(*low),
            [] => return IoAction::Continue,
        };
        match offset {
            0 => self.index = value,
            _ => self.write_register(usize::from(self.index), value),
        }
        IoAction::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter() -> (BochsVbe, SharedMode, GuestMemoryMmap) {
        let framebuffer = GuestMemoryMmap::from_ranges(&[(
            GuestAddress(FRAMEBUFFER_ADDRESS),
            FRAMEBUFFER_SIZE as usize,
        )])
        .unwrap();
        let mode = SharedMode::default();
        (
            BochsVbe::new(framebuffer.clone(), Arc::clone(&mode)),
            mode,
            framebuffer,
        )
    }

    fn write(vbe: &mut BochsVbe, index: u16, value: u16) {
        vbe.write(0, &index.to_le_bytes());
        vbe.write(1, &value.to_le_bytes());
    }

    fn read(vbe: &mut BochsVbe, index: u16) -> u16 {
        vbe.write(0, &index.to_le_bytes());
        let mut data = [0u8; 2];
        vbe.read(1, &mut data);
        u16::from_le_bytes(data)
    }

    #[test]
    fn a_guest_sets_a_mode_the_way_tutorials_do() {
        let (mut vbe, mode, framebuffer) = adapter();
        assert_eq!(read(&mut vbe, 0), DISPI_ID);
        framebuffer
            .write_obj(0xffu8, GuestAddress(FRAMEBUFFER_ADDRESS))
            .unwrap();
        write(&mut vbe, 4, 0);
        write(&mut vbe, 1, 320);
        write(&mut vbe, 2, 240);
        write(&mut vbe, 3, 32);
        assert_eq!(*mode.lock().unwrap(), None);
        write(&mut vbe, 4, 0x41); // enabled, linear framebuffer
        let expected = GraphicsMode {
            width: 320,
            height: 240,
            bits_per_pixel: 32,
            pitch: 1280,
            start: 0,
        };
        assert_eq!(*mode.lock().unwrap(), Some(expected));
        assert_eq!(read(&mut vbe, 6), 320);
        // Enabling cleared the screen.
        let first: u8 = framebuffer
            .read_obj(GuestAddress(FRAMEBUFFER_ADDRESS))
            .unwrap();
        assert_eq!(first, 0);
        assert_eq!(read(&mut vbe, 10), 256);
        write(&mut vbe, 4, 0);
        assert_eq!(*mode.lock().unwrap(), None);
    }

    #[test]
    fn the_capabilities_bit_reads_the_largest_mode() {
        let (mut vbe, _, _) = adapter();
        write(&mut vbe, 4, GET_CAPABILITIES);
        assert_eq!(read(&mut vbe, 1), MAX_WIDTH);
        assert_eq!(read(&mut vbe, 2), MAX_HEIGHT);
        assert_eq!(read(&mut vbe, 3), MAX_BPP);
    }

    #[test]
    fn depths_it_cannot_show_leave_text_mode() {
        let (mut vbe, mode, _) = adapter();
        write(&mut vbe, 1, 640);
        write(&mut vbe, 2, 480);
        write(&mut vbe, 3, 8);
        write(&mut vbe, 4, 1);
        assert_eq!(*mode.lock().unwrap(), None);
    }

    #[test]
    fn pixels_in_each_depth() {
        let mut mode = GraphicsMode {
            width: 1,
            height: 1,
            bits_per_pixel: 32,
            pitch: 4,
            start: 0,
        };
        assert_eq!(mode.rgb(&[0x10, 0x20, 0x30, 0]), (0x30, 0x20, 0x10));
        mode.bits_per_pixel = 16;
        assert_eq!(mode.rgb(&0xf800u16.to_le_bytes()), (0xff, 0, 0));
        assert_eq!(mode.rgb(&0x07e0u16.to_le_bytes()), (0, 0xff, 0));
        assert_eq!(mode.rgb(&0x001fu16.to_le_bytes()), (0, 0, 0xff));
    }
}
