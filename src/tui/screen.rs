//! A guest's display drawn into a pane (`--display`): VGA text cell for cell, each character in
//! code page 437 and its attribute's colours, the cursor in reverse video; a framebuffer scaled
//! into the pane with the half-block character `▀`, whose foreground colour is the upper pixel and
//! background colour the lower one, so that each terminal cell shows two square pixels. In a
//! terminal that shows images through the kitty graphics protocol (kitty, WezTerm, Ghostty), the
//! framebuffer goes to the terminal as an image instead, pixel for pixel.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd};

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};

use crate::devices::display::vga_text::{COLUMNS, ROWS, Screen, cp437};
use crate::devices::display::{Picture, View};
use crate::vmm::seccomp::SCREENSHOT_OPEN_FLAGS;

/// The VGA's 16 colours as the terminal's 16 (VGA counts blue as 1, ANSI counts red as 1). The
/// terminal's own palette decides the exact shades, as it does for every program.
const VGA_TO_TERMINAL: [Color; 16] = [
    Color::Black,
    Color::Blue,
    Color::Green,
    Color::Cyan,
    Color::Red,
    Color::Magenta,
    Color::Yellow, // brown
    Color::Gray,   // light grey
    Color::DarkGray,
    Color::LightBlue,
    Color::LightGreen,
    Color::LightCyan,
    Color::LightRed,
    Color::LightMagenta,
    Color::LightYellow, // yellow
    Color::White,
];

/// Does the terminal show images through the kitty graphics protocol? Terminals that do say so
/// in the environment they give programs: kitty sets `KITTY_WINDOW_ID` (and `TERM=xterm-kitty`),
/// WezTerm and Ghostty set `TERM_PROGRAM`. (Asking the terminal itself would mean reading its
/// answer before crossterm reads the keyboard.) Inside tmux, which drops the images, none of these
/// reach the program unless the user passes them on.
pub fn terminal_shows_kitty_images() -> bool {
    let variable = |name: &str| std::env::var(name).unwrap_or_default();
    std::env::var_os("KITTY_WINDOW_ID").is_some()
        || ["xterm-kitty", "xterm-ghostty"].contains(&variable("TERM").as_str())
        || ["WezTerm", "ghostty"].contains(&variable("TERM_PROGRAM").as_str())
}

/// The kitty graphics protocol's bytes for `picture` shown in `area` (scaled by the terminal to
/// the cells [`rows_needed`] gives it), as image `id`, replacing that id's earlier picture. The
/// pixels go as 24-bit RGB (`f=24`) in base64, in chunks of at most 4096 characters (`m=1`: more
/// follows); `q=2` asks the terminal not to answer, and `C=1` not to move the cursor.
pub fn kitty_image(id: u32, picture: &Picture, area: Rect) -> Vec<u8> {
    let (width, height) = fit(picture, area.width, area.height);
    let (columns, rows) = (width, height.div_ceil(2));
    let mut out = Vec::new();
    // Save the cursor, delete the old picture, go to the area's top left (1-based).
    out.extend_from_slice(format!("\x1b7\x1b_Ga=d,d=I,i={id},q=2\x1b\\").as_bytes());
    out.extend_from_slice(format!("\x1b[{};{}H", area.y + 1, area.x + 1).as_bytes());
    let encoded = base64(&picture.rgb);
    let mut chunks = encoded.chunks(4096).peekable();
    let mut first = true;
    while let Some(chunk) = chunks.next() {
        let more = u8::from(chunks.peek().is_some());
        let keys = if first {
            format!(
                "a=T,i={id},f=24,s={},v={},c={columns},r={rows},C=1,q=2,m={more}",
                picture.width, picture.height
            )
        } else {
            format!("m={more}")
        };
        first = false;
        out.extend_from_slice(format!("\x1b_G{keys};").as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\x1b\\");
    }
    // And the cursor back where ratatui left it.
    out.extend_from_slice(b"\x1b8");
    out
}

/// Standard base64 (RFC 4648, with `=` padding).
fn base64(bytes: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let value = u32::from(group[0]) << 16
            | u32::from(*group.get(1).unwrap_or(&0)) << 8
            | u32::from(*group.get(2).unwrap_or(&0));
        for index in 0..4 {
            if index <= group.len() {
                out.push(ALPHABET[(value >> (18 - 6 * index)) as usize & 63]);
            } else {
                out.push(b'=');
            }
        }
    }
    out
}

/// The most screenshots of one guest in one directory (NAME-screen-1 ... NAME-screen-999).
const MAX_SCREENSHOTS: u32 = 999;

/// Saves `view` in `directory`, the current directory opened when the view started (Ctrl-S):
/// a framebuffer as NAME-screen-N.png, a text screen as NAME-screen-N.txt in `--screen-dump`'s
/// format, N the first number not taken. Files are only ever created, never overwritten and
/// never through a link: the view's seccomp filter allows `openat` in that directory with
/// [`SCREENSHOT_OPEN_FLAGS`] (`O_EXCL | O_NOFOLLOW`) and no other way to write a file.
/// Returns the file's name.
pub fn save(directory: BorrowedFd, guest: &str, view: &View) -> Result<String, String> {
    let (extension, bytes) = match view {
        View::Text(screen) => ("txt", screen.dump().into_bytes()),
        View::Graphics(picture) => ("png", picture.png()),
    };
    // A guest named after a file (./dir/x.bin): its last part, in characters safe in a name.
    let base: String = guest
        .rsplit('/')
        .next()
        .unwrap_or(guest)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    for number in 1..=MAX_SCREENSHOTS {
        let name = format!("{base}-screen-{number}.{extension}");
        let c_name = CString::new(name.as_bytes()).map_err(|_| format!("bad name {name}"))?;
        // SAFETY: an open directory and a NUL-terminated name; the descriptor returned is ours.
        let fd = unsafe {
            libc::openat(
                directory.as_raw_fd(),
                c_name.as_ptr(),
                SCREENSHOT_OPEN_FLAGS,
                0o644 as libc::c_uint,
            )
        };
        if fd < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::AlreadyExists {
                continue;
            }
            return Err(format!("cannot create {name}: {error}"));
        }
        // SAFETY: a descriptor just opened, owned by nobody else.
        let mut file = unsafe { File::from_raw_fd(fd) };
        return file
            .write_all(&bytes)
            .map(|()| name.clone())
            .map_err(|error| format!("cannot write {name}: {error}"));
    }
    Err(format!("{base}-screen-1 to -{MAX_SCREENSHOTS} all exist"))
}

/// The terminal rows `view` takes in a pane `width` cells wide, at most `max_rows`.
pub fn rows_needed(view: &View, width: u16, max_rows: u16) -> u16 {
    match view {
        View::Text(_) => (ROWS as u16).min(max_rows),
        View::Graphics(picture) => {
            let (_, height) = fit(picture, width, max_rows);
            height.div_ceil(2) as u16
        }
    }
}

/// A short description of the mode, for the pane's title.
pub fn describe(view: &View) -> String {
    match view {
        View::Text(_) => format!("VGA text {COLUMNS}x{ROWS}"),
        View::Graphics(picture) => format!("{}x{} graphics", picture.width, picture.height),
    }
}

/// Draws `view` at the top left of `area`. With `images` (the kitty protocol), a picture is left
/// to the terminal: its cells are blanked, and [`kitty_image`] sends it after the frame.
pub fn draw(buffer: &mut Buffer, area: Rect, view: &View, images: bool) {
    match view {
        View::Text(screen) => draw_text(buffer, area, screen),
        View::Graphics(_) if images => buffer.set_style(area, Style::new()),
        View::Graphics(picture) => draw_picture(buffer, area, picture),
    }
}

fn draw_text(buffer: &mut Buffer, area: Rect, screen: &Screen) {
    for row in 0..(ROWS as u16).min(area.height) {
        for column in 0..(COLUMNS as u16).min(area.width) {
            let (character, attribute) = screen.cell(usize::from(row), usize::from(column));
            // Blink off: bit 7 makes the background bright, as on a VGA set up that way.
            let mut style = Style::new()
                .fg(VGA_TO_TERMINAL[usize::from(attribute & 0x0f)])
                .bg(VGA_TO_TERMINAL[usize::from(attribute >> 4)]);
            if screen.cursor() == Some((usize::from(row), usize::from(column))) {
                style = style.add_modifier(Modifier::REVERSED);
            }
            if let Some(cell) = buffer.cell_mut((area.x + column, area.y + row)) {
                cell.set_char(cp437(character)).set_style(style);
            }
        }
    }
}

/// The size (in pixels: two per terminal row) the picture is scaled to, to fit `width` cells by
/// `rows` rows without changing its shape.
fn fit(picture: &Picture, width: u16, rows: u16) -> (u32, u32) {
    let (width, height) = (u32::from(width), u32::from(rows) * 2);
    let (picture_width, picture_height) = (picture.width.max(1), picture.height.max(1));
    if picture_width * height <= picture_height * width {
        ((picture_width * height / picture_height).max(1), height)
    } else {
        (width, (picture_height * width / picture_width).max(1))
    }
}

fn draw_picture(buffer: &mut Buffer, area: Rect, picture: &Picture) {
    let (width, height) = fit(picture, area.width, area.height);
    for y in (0..height).step_by(2) {
        for x in 0..width {
            let upper = average(picture, x, y, width, height);
            let lower = if y + 1 < height {
                average(picture, x, y + 1, width, height)
            } else {
                (0, 0, 0)
            };
            let position = (area.x + x as u16, area.y + (y / 2) as u16);
            if let Some(cell) = buffer.cell_mut(position) {
                cell.set_char('▀').set_style(
                    Style::new()
                        .fg(Color::Rgb(upper.0, upper.1, upper.2))
                        .bg(Color::Rgb(lower.0, lower.1, lower.2)),
                );
            }
        }
    }
}

/// The mean colour of the picture's pixels that scaled pixel (x, y) of a `width` x `height`
/// image covers.
fn average(picture: &Picture, x: u32, y: u32, width: u32, height: u32) -> (u8, u8, u8) {
    let span = |at: u32, scaled: u32, size: u32| {
        let start = at * size / scaled;
        let end = ((at + 1) * size / scaled).max(start + 1).min(size);
        start..end
    };
    let (mut sum, mut count) = ([0u32; 3], 0u32);
    for source_y in span(y, height, picture.height) {
        for source_x in span(x, width, picture.width) {
            let (red, green, blue) = picture.pixel(source_x, source_y);
            sum[0] += u32::from(red);
            sum[1] += u32::from(green);
            sum[2] += u32::from(blue);
            count += 1;
        }
    }
    let count = count.max(1);
    (
        (sum[0] / count) as u8,
        (sum[1] / count) as u8,
        (sum[2] / count) as u8,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture(width: u32, height: u32) -> Picture {
        Picture {
            width,
            height,
            rgb: vec![0; (width * height * 3) as usize],
        }
    }

    #[test]
    fn base64_matches_rfc_4648s_examples() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded.as_bytes(), "{plain:?}");
        }
    }

    #[test]
    fn a_kitty_image_goes_in_chunks_at_its_area() {
        // 64 x 64 pixels: 12,288 bytes, 16,384 base64 characters, 4 chunks.
        let bytes = kitty_image(2, &picture(64, 64), Rect::new(10, 5, 40, 20));
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("\x1b7\x1b_Ga=d,d=I,i=2,q=2\x1b\\\x1b[6;11H\x1b_Ga=T,i=2,f=24,s=64,v=64,c=40,r=20,C=1,q=2,m=1;AAAA"));
        assert_eq!(text.matches("\x1b_Gm=1;").count(), 2);
        assert_eq!(text.matches("\x1b_Gm=0;").count(), 1);
        assert!(text.ends_with("\x1b\\\x1b8"));
    }

    #[test]
    fn a_picture_keeps_its_shape() {
        // 320x240 in 80 columns: 80x60 pixels, 30 rows.
        assert_eq!(fit(&picture(320, 240), 80, 100), (80, 60));
        assert_eq!(rows_needed(&View::Graphics(picture(320, 240)), 80, 100), 30);
        // Only 20 rows: 40 pixels high, 53 wide.
        assert_eq!(fit(&picture(320, 240), 80, 20), (53, 40));
    }

    #[test]
    fn scaling_down_averages_the_pixels() {
        let mut picture = picture(2, 2);
        picture.rgb[..3].copy_from_slice(&[200, 100, 0]);
        // One cell: the upper pixel is the mean of all four.
        assert_eq!(average(&picture, 0, 0, 1, 1), (50, 25, 0));
        let mut buffer = Buffer::empty(Rect::new(0, 0, 4, 4));
        draw_picture(&mut buffer, Rect::new(0, 0, 2, 1), &picture);
        let cell = &buffer[(0, 0)];
        assert_eq!(cell.symbol(), "▀");
        assert_eq!(cell.fg, Color::Rgb(200, 100, 0));
        assert_eq!(cell.bg, Color::Rgb(0, 0, 0));
    }
}
