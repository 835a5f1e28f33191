//! The display adapter (docs/display.md): VGA text mode (the 80x25 buffer at 0xB8000 and the CRT
//! controller's cursor, `vga_text.rs`) and a linear framebuffer (the Bochs VBE registers,
//! `vbe.rs`), both plain guest memory that the guest draws into without a VM exit.
//!
//! Nothing here polls guest memory byte by byte. Each of the two memory windows is a KVM memory
//! slot whose writes KVM logs (`KVM_MEM_LOG_DIRTY_PAGES`); a [`DisplayWatch`] asks the logs
//! which pages changed since its last look, and copies only those. [`Display`] is what the VM
//! hands to whoever shows the screen: the `--tui`/`--display` view while the guest runs, and
//! `--screen-dump` and `--screenshot` at the end.

pub mod png;
pub mod vbe;
pub mod vga_text;

use std::ops::Range;
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::x86::layout::{FRAMEBUFFER_ADDRESS, PAGE_SIZE};
use vbe::{GraphicsMode, SharedMode};
use vga_text::{COLUMNS, Cursor, ROWS, Screen};

/// Which pages of a memory slot the guest wrote since the last call (one bit per page, as
/// `KVM_GET_DIRTY_LOG` returns them), or `None` when the log cannot be read (then everything
/// counts as changed).
pub trait DirtyLog: Send + Sync {
    fn dirty_pages(&self) -> Option<Vec<u64>>;
}

/// The display of one guest, as other threads read it.
#[derive(Clone)]
pub struct Display(Arc<DisplayParts>);

/// What a display is made of: the memory the guest draws in, the devices' published state, and
/// the two memory slots' dirty logs.
pub struct DisplayParts {
    /// Guest RAM, which holds the text buffer.
    pub ram: GuestMemoryMmap,
    /// The CRT controller's cursor.
    pub cursor: Arc<Cursor>,
    /// The linear framebuffer's memory, at [`FRAMEBUFFER_ADDRESS`].
    pub framebuffer: GuestMemoryMmap,
    /// The Bochs VBE adapter's mode.
    pub mode: SharedMode,
    pub text_log: Box<dyn DirtyLog>,
    pub framebuffer_log: Box<dyn DirtyLog>,
}

impl Display {
    pub fn new(parts: DisplayParts) -> Display {
        Display(Arc::new(parts))
    }

    /// The text screen as it is now.
    pub fn text_screen(&self) -> Screen {
        Screen::read(&self.0.ram, &self.0.cursor)
    }

    /// The graphics mode the guest set, or `None` in text mode.
    pub fn graphics_mode(&self) -> Option<GraphicsMode> {
        *self.0.mode.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The framebuffer's visible pixels, or `None` in text mode.
    pub fn picture(&self) -> Option<Picture> {
        let mode = self.graphics_mode()?;
        let mut bytes = vec![0u8; mode.visible_bytes() as usize];
        let _ = self
            .0
            .framebuffer
            .read_slice(&mut bytes, GuestAddress(FRAMEBUFFER_ADDRESS + mode.start));
        Some(Picture::from_framebuffer(&mode, &bytes))
    }

    /// A viewer's copy of the screen, kept up to date from the dirty logs. One at a time: reading
    /// a log clears it.
    pub fn watch(&self) -> DisplayWatch {
        DisplayWatch {
            display: self.clone(),
            shown: None,
            framebuffer_copy: Vec::new(),
            pages_copied: 0,
            generation: 0,
        }
    }
}

/// A graphics screen's pixels, 3 bytes (red, green, blue) each, row by row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl Picture {
    /// Converts the visible part of a framebuffer (`bytes` from the mode's start) to RGB.
    fn from_framebuffer(mode: &GraphicsMode, bytes: &[u8]) -> Picture {
        let mut picture = Picture {
            width: mode.width,
            height: mode.height,
            rgb: vec![0; mode.width as usize * mode.height as usize * 3],
        };
        picture.convert_rows(mode, bytes, 0..mode.height);
        picture
    }

    /// Converts `rows` of the framebuffer's visible part again (`bytes` from the mode's start).
    fn convert_rows(&mut self, mode: &GraphicsMode, bytes: &[u8], rows: Range<u32>) {
        let bytes_per_pixel = mode.bytes_per_pixel() as usize;
        for row in rows.start as usize..rows.end.min(self.height) as usize {
            let line = row * mode.pitch as usize;
            for column in 0..self.width as usize {
                let at = line + column * bytes_per_pixel;
                let (red, green, blue) = mode.rgb(bytes.get(at..).unwrap_or(&[]));
                let pixel = (row * self.width as usize + column) * 3;
                self.rgb[pixel..pixel + 3].copy_from_slice(&[red, green, blue]);
            }
        }
    }

    /// The colour at (x, y), which must be inside the picture.
    pub fn pixel(&self, x: u32, y: u32) -> (u8, u8, u8) {
        let at = (y as usize * self.width as usize + x as usize) * 3;
        (self.rgb[at], self.rgb[at + 1], self.rgb[at + 2])
    }

    /// The picture as a PNG file.
    pub fn png(&self) -> Vec<u8> {
        png::encode(self.width, self.height, &self.rgb)
    }
}

/// What a viewer shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    Text(Screen),
    Graphics(Picture),
}

/// A viewer's copy of the screen.
pub struct DisplayWatch {
    display: Display,
    /// What the last [`DisplayWatch::update`] saw: the mode, the view; `None` before the first.
    shown: Option<(Option<GraphicsMode>, View)>,
    /// In graphics mode, the visible part of the framebuffer as the guest wrote it.
    framebuffer_copy: Vec<u8>,
    /// Framebuffer pages copied so far (for tests and docs: a drawing that changes few pages
    /// copies few).
    pages_copied: u64,
    /// Changes seen by [`DisplayWatch::update`].
    generation: u64,
}

impl DisplayWatch {
    /// Brings the copy up to date; returns whether the screen changed since the last call.
    /// Only what the dirty logs report is read again (and all of it after a mode change).
    pub fn update(&mut self) -> bool {
        let changed = self.refresh();
        if changed {
            self.generation += 1;
        }
        changed
    }

    /// How many times the screen has changed (a view that sends whole pictures, like the kitty
    /// graphics protocol, sends one again when this moves).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn refresh(&mut self) -> bool {
        let parts = &self.display.0;
        // Both logs are read every time, so that a mode switch finds no stale bits.
        let text_pages = parts.text_log.dirty_pages();
        let framebuffer_pages = parts.framebuffer_log.dirty_pages();
        let mode = self.display.graphics_mode();
        let same_mode = self.shown.as_ref().is_some_and(|(shown, _)| *shown == mode);
        let view = match mode {
            None => {
                // The text buffer is the first 4000 bytes of its window.
                let text_pages_used = (COLUMNS * ROWS * 2).div_ceil(PAGE_SIZE as usize);
                let text_changed = text_pages
                    .as_deref()
                    .is_none_or(|bitmap| any_page(bitmap, 0, text_pages_used));
                let screen = if text_changed || !same_mode {
                    self.display.text_screen()
                } else {
                    match &self.shown {
                        // The cursor may have moved: that is a register, not memory.
                        Some((_, View::Text(screen))) => {
                            screen.with_cursor(parts.cursor.position())
                        }
                        _ => self.display.text_screen(),
                    }
                };
                View::Text(screen)
            }
            Some(mode) => {
                let visible_pages = (mode.start / PAGE_SIZE) as usize
                    ..(mode.start + mode.visible_bytes()).div_ceil(PAGE_SIZE) as usize;
                if !same_mode {
                    self.framebuffer_copy = vec![0; mode.visible_bytes() as usize];
                    self.copy_framebuffer(&mode, visible_pages);
                    View::Graphics(Picture::from_framebuffer(&mode, &self.framebuffer_copy))
                } else {
                    let dirty: Vec<usize> = match framebuffer_pages {
                        Some(bitmap) => visible_pages
                            .filter(|&page| any_page(&bitmap, page, 1))
                            .collect(),
                        None => visible_pages.collect(),
                    };
                    if dirty.is_empty() {
                        return false;
                    }
                    // Only the rows those pages hold are converted again.
                    let rows = self.copy_framebuffer(&mode, dirty);
                    if let Some((_, View::Graphics(picture))) = &mut self.shown {
                        picture.convert_rows(&mode, &self.framebuffer_copy, rows);
                    }
                    return true;
                }
            }
        };
        let changed = self.shown.as_ref().is_none_or(|(_, shown)| *shown != view);
        self.shown = Some((mode, view));
        changed
    }

    /// Copies framebuffer pages `pages` (numbered from the framebuffer's start) into the copy of
    /// the visible part; returns the rows of pixels they hold.
    fn copy_framebuffer(
        &mut self,
        mode: &GraphicsMode,
        pages: impl IntoIterator<Item = usize>,
    ) -> Range<u32> {
        let visible = mode.start..mode.start + mode.visible_bytes();
        let pitch = u64::from(mode.pitch.max(1));
        // The first row and the row after the last (none yet).
        let (mut first, mut end) = (u32::MAX, 0);
        for page in pages {
            let page_start = page as u64 * PAGE_SIZE;
            let from = page_start.max(visible.start);
            let to = (page_start + PAGE_SIZE).min(visible.end);
            if from >= to {
                continue;
            }
            let at = (from - visible.start) as usize;
            let len = (to - from) as usize;
            let _ = self.display.0.framebuffer.read_slice(
                &mut self.framebuffer_copy[at..at + len],
                GuestAddress(FRAMEBUFFER_ADDRESS + from),
            );
            self.pages_copied += 1;
            let first_row = ((from - visible.start) / pitch) as u32;
            let last_row = ((to - 1 - visible.start) / pitch) as u32;
            first = first.min(first_row);
            end = end.max(last_row + 1);
        }
        first.min(mode.height)..end.min(mode.height)
    }

    /// The screen as of the last [`DisplayWatch::update`] (`None` before the first).
    pub fn view(&self) -> Option<&View> {
        self.shown.as_ref().map(|(_, view)| view)
    }

    pub fn pages_copied(&self) -> u64 {
        self.pages_copied
    }
}

/// Is any of `count` pages from `first` set in a dirty bitmap?
fn any_page(bitmap: &[u64], first: usize, count: usize) -> bool {
    (first..first + count).any(|page| {
        bitmap
            .get(page / 64)
            .is_some_and(|word| word & (1 << (page % 64)) != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use vbe::BochsVbe;

    use crate::arch::x86::layout::{FRAMEBUFFER_SIZE, VGA_TEXT_WINDOW};
    use crate::devices::bus::BusDevice;

    /// A dirty log the test fills by hand: it proves the watch reads only what a log reports.
    #[derive(Clone, Default)]
    struct ScriptedLog(Arc<Mutex<Vec<u64>>>);

    impl ScriptedLog {
        fn mark(&self, page: usize) {
            let mut bits = self.0.lock().unwrap();
            let words = bits.len().max(page / 64 + 1);
            bits.resize(words, 0);
            bits[page / 64] |= 1 << (page % 64);
        }
    }

    impl DirtyLog for ScriptedLog {
        fn dirty_pages(&self) -> Option<Vec<u64>> {
            Some(std::mem::take(&mut *self.0.lock().unwrap()))
        }
    }

    struct Rig {
        display: Display,
        ram: GuestMemoryMmap,
        framebuffer: GuestMemoryMmap,
        vbe: BochsVbe,
        text_log: ScriptedLog,
        framebuffer_log: ScriptedLog,
    }

    fn rig() -> Rig {
        let ram = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let framebuffer = GuestMemoryMmap::from_ranges(&[(
            GuestAddress(FRAMEBUFFER_ADDRESS),
            FRAMEBUFFER_SIZE as usize,
        )])
        .unwrap();
        let mode = SharedMode::default();
        let (text_log, framebuffer_log) = (ScriptedLog::default(), ScriptedLog::default());
        let display = Display::new(DisplayParts {
            ram: ram.clone(),
            cursor: Arc::new(Cursor::default()),
            framebuffer: framebuffer.clone(),
            mode: Arc::clone(&mode),
            text_log: Box::new(text_log.clone()),
            framebuffer_log: Box::new(framebuffer_log.clone()),
        });
        Rig {
            display,
            ram,
            vbe: BochsVbe::new(framebuffer.clone(), mode),
            framebuffer,
            text_log,
            framebuffer_log,
        }
    }

    fn first_character(view: Option<&View>) -> u8 {
        match view.unwrap() {
            View::Text(screen) => screen.cell(0, 0).0,
            View::Graphics(_) => panic!("graphics"),
        }
    }

    #[test]
    fn text_is_read_again_only_when_its_log_says_so() {
        let rig = rig();
        let mut watch = rig.display.watch();
        assert!(watch.update());
        assert!(!watch.update());
        rig.ram
            .write_obj(b'A', GuestAddress(VGA_TEXT_WINDOW))
            .unwrap();
        // Not in the log: the watch does not look.
        assert!(!watch.update());
        assert_eq!(first_character(watch.view()), 0);
        rig.text_log.mark(0);
        assert!(watch.update());
        assert_eq!(first_character(watch.view()), b'A');
    }

    #[test]
    fn a_graphics_mode_copies_the_dirty_pages_only() {
        let mut rig = rig();
        let mut watch = rig.display.watch();
        watch.update();
        for (index, value) in [(1u16, 64u16), (2, 64), (3, 32), (4, 1)] {
            rig.vbe.write(0, &index.to_le_bytes());
            rig.vbe.write(1, &value.to_le_bytes());
        }
        // The mode switch reads the whole screen: 64 x 64 x 4 bytes = 4 pages.
        assert!(watch.update());
        assert_eq!(watch.pages_copied(), 4);
        // A red pixel at (0, 32), in page 2, written by the "guest".
        let at = FRAMEBUFFER_ADDRESS + 32 * 256;
        rig.framebuffer
            .write_slice(&[0, 0, 0xff, 0], GuestAddress(at))
            .unwrap();
        assert!(!watch.update());
        rig.framebuffer_log.mark(2);
        assert!(watch.update());
        assert_eq!(watch.pages_copied(), 5);
        let Some(View::Graphics(picture)) = watch.view() else {
            panic!("text");
        };
        assert_eq!((picture.width, picture.height), (64, 64));
        assert_eq!(picture.pixel(0, 32), (0xff, 0, 0));
        assert_eq!(picture.pixel(0, 31), (0, 0, 0));
        assert_eq!(rig.display.picture().as_ref(), Some(picture));
    }
}
