//! The `--tui` split-screen view (ratatui + crossterm): one pane per guest with its title, its
//! output, its state and a live count of its VM exits. The original Mini-KVM's demo idea, "split
//! the screen and show each guest's output at the same time", done properly. With `--display`,
//! each pane shows the guest's screen above its output (screen.rs), redrawn from KVM's dirty
//! log: one guest fills the terminal, several sit side by side.
//!
//! Keys: Tab / Shift-Tab / Left / Right move the focus; PgUp / PgDn / Home / End scroll the
//! focused pane; Ctrl-Q (or Ctrl-C) quits, stopping guests still running; Ctrl-D ends the focused
//! guest's input; with `--display`, Ctrl-S saves the focused guest's screen; every other key goes
//! to the focused guest.
//!
//! The terminal is restored on every way out: the normal end, an error (ratatui's restore), a
//! panic (ratatui's panic hook), and SIGTERM / SIGHUP / SIGINT (a handler sets a flag the loop
//! checks). A terminal that has gone away (SIGHUP with stdin hung up, or stdin hung up alone when
//! the shell ignores SIGHUP) ends the process at once, status 129: there is nothing to restore.

use std::io::{self, IsTerminal, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::{DefaultTerminal, Frame};
use vmm_sys_util::signal::register_signal_handler;

mod screen;

use crate::config::RunConfig;
use crate::console::{GuestInput, GuestIo, GuestOutput, InputFeeder};
use crate::devices::display::{DisplayWatch, View};
use crate::vmm::group::{Group, GuestResult};
use crate::vmm::seccomp::{self, Role};
use crate::vmm::stats::LiveCounters;
use crate::vmm::vm::VmError;

/// Lines kept per pane: enough to scroll back through any built-in guest's output.
const MAX_LINES: usize = 5000;
/// Rows of output under a guest's screen (`--display`), at the least.
const OUTPUT_ROWS: u16 = 3;
/// How often the screen is redrawn while nothing else happens.
const REFRESH: Duration = Duration::from_millis(50);

/// Set by the signal handler: leave the view, restoring the terminal.
static SIGNALLED: AtomicBool = AtomicBool::new(false);

/// The text of one pane, built from the guest's output bytes.
#[derive(Default)]
struct PaneText {
    lines: Vec<String>,
    current: String,
}

impl PaneText {
    fn push(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            match byte {
                b'\n' => {
                    self.lines.push(std::mem::take(&mut self.current));
                    if self.lines.len() > MAX_LINES {
                        self.lines.remove(0);
                    }
                }
                // Backspace (a guest erasing a character with "\b \b").
                0x08 => {
                    self.current.pop();
                }
                b'\t' => self.current.push_str("    "),
                0x20..=0x7e => self.current.push(byte as char),
                // Other control bytes and non-ASCII would garble the layout.
                _ => {}
            }
        }
    }

    fn all_lines(&self) -> impl Iterator<Item = &str> {
        self.lines
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(self.current.as_str()))
    }
}

/// The writer a guest's [`GuestOutput`] writes into: the pane's text.
struct PaneWriter(Arc<Mutex<PaneText>>);

impl Write for PaneWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One guest as the view sees it.
struct Pane {
    title: String,
    /// The guest's name (screenshots are named after it).
    name: String,
    text: Arc<Mutex<PaneText>>,
    live: Arc<LiveCounters>,
    /// The guest's state and exit count as of the last frame, read before its screen was:
    /// a title that says the guest has ended comes with its final screen.
    seen: Seen,
    input: InputFeeder,
    /// Lines scrolled up from the bottom.
    scroll: usize,
    /// With `--display`: the guest's screen.
    display: Option<DisplayWatch>,
}

/// What a pane's title shows.
#[derive(Default)]
struct Seen {
    /// `Some((status, description))` once the guest has ended.
    ended: Option<(u8, String)>,
    exits: u64,
}

/// Runs the guests of `config` in the split-screen view until the user quits.
pub fn run(config: &RunConfig) -> Result<Vec<GuestResult>, VmError> {
    let missing = match (io::stdin().is_terminal(), io::stdout().is_terminal()) {
        (true, true) => None,
        (false, true) => Some("stdin is not a terminal"),
        (true, false) => Some("stdout is not a terminal"),
        (false, false) => Some("neither stdin nor stdout is a terminal"),
    };
    if let Some(missing) = missing {
        let option = if config.display { "--display" } else { "--tui" };
        return Err(VmError::TuiWithoutTerminal { option, missing });
    }
    let mut texts = Vec::new();
    let mut feeders = Vec::new();
    let consoles: Vec<GuestIo> = config
        .guests
        .iter()
        .map(|_| {
            let text = Arc::new(Mutex::new(PaneText::default()));
            let (input, feeder) = GuestInput::fed();
            texts.push(Arc::clone(&text));
            feeders.push(feeder);
            GuestIo {
                output: GuestOutput::to_writer(Box::new(PaneWriter(text))),
                input,
            }
        })
        .collect();
    // Ctrl-S (--display only) saves in the current directory, opened now, before the filters
    // are built: the view's filter lets it create new files only relative to this descriptor
    // (docs/security.md says what seccomp cannot see: the name).
    let screenshots = if config.display {
        std::fs::File::open(".")
            .map_err(|error| format!("cannot open the current directory: {error}"))
    } else {
        Err("no display".to_string())
    };
    if config.vm.seccomp
        && let Ok(directory) = &screenshots
    {
        seccomp::allow_creating_screenshots_in(directory.as_fd())?;
    }
    // --gdb and --tui do not go together (the command line refuses them).
    let group = Group::create(config, consoles, &|_, _| Ok(None))?;
    let displays = group.displays();
    let mut panes: Vec<Pane> = group
        .live_counters()
        .into_iter()
        .zip(texts)
        .zip(feeders)
        .zip(displays)
        .enumerate()
        .map(|(index, ((((name, live), text), input), display))| Pane {
            title: format!("[{}:{name}]", index + 1),
            name,
            text,
            live,
            input,
            scroll: 0,
            seen: Seen::default(),
            display: display
                .filter(|_| config.display)
                .map(|display| display.watch()),
        })
        .collect();

    install_signal_handlers();
    let cancel = Arc::new(AtomicBool::new(false));
    let timeout = config.timeout;
    let running = {
        let cancel = Arc::clone(&cancel);
        thread::Builder::new()
            .name("guests".into())
            .spawn(move || group.run(timeout, &cancel, &AtomicBool::new(false)))
            .map_err(VmError::Thread)?
    };

    let mut terminal = match ratatui::try_init() {
        Ok(terminal) => terminal,
        Err(error) => {
            cancel.store(true, Ordering::Release);
            let _ = running.join();
            ratatui::restore();
            return Err(VmError::Terminal(error));
        }
    };
    // crossterm sets up its event source (an epoll, a socket pair for SIGWINCH) at the first
    // poll; after that, this thread takes the terminal view's seccomp filter.
    if config.vm.seccomp {
        let ready = event::poll(Duration::ZERO);
        if let Err(error) = ready
            .map_err(VmError::Terminal)
            .and_then(|_| seccomp::install(Role::Terminal).map_err(VmError::from))
        {
            cancel.store(true, Ordering::Release);
            let _ = running.join();
            ratatui::restore();
            return Err(error);
        }
    }
    let view = interact(&mut terminal, &mut panes, screenshots.as_ref());
    cancel.store(true, Ordering::Release);
    let results = running.join();
    ratatui::restore();
    view.map_err(VmError::Terminal)?;
    results.map_err(|_| VmError::VcpuPanicked("(group)".into()))
}

/// The event loop: draw, then handle keys, until the user quits or a signal arrives.
fn interact(
    terminal: &mut DefaultTerminal,
    panes: &mut [Pane],
    screenshots: Result<&std::fs::File, &String>,
) -> io::Result<()> {
    let mut focus = 0;
    // Pictures through the kitty graphics protocol, where the terminal shows them; and what was
    // last sent for each pane (the screen's generation, and where), to send only what changed.
    let images = screen::terminal_shows_kitty_images();
    let mut sent: Vec<Option<(u64, Rect)>> = vec![None; panes.len()];
    // What the last Ctrl-S did, shown in the footer until the next key.
    let mut notice: Option<String> = None;
    loop {
        for pane in panes.iter_mut() {
            pane.seen = Seen {
                ended: pane.live.ended(),
                exits: pane.live.exits(),
            };
            // What the guest drew since the last frame (only the pages KVM logged are read),
            // after its state: an ended guest's screen is final.
            if let Some(display) = pane.display.as_mut() {
                display.update();
            }
        }
        let mut pictures = Vec::new();
        terminal.draw(|frame| pictures = draw(frame, panes, focus, notice.as_deref(), images))?;
        if images {
            send_pictures(panes, &pictures, &mut sent)?;
        }
        if SIGNALLED.load(Ordering::Relaxed) {
            return Ok(());
        }
        match wait_for_terminal(REFRESH) {
            TerminalInput::HungUp => end_with_hangup(),
            // A resize comes through crossterm's own signal pipe, not the terminal: it is
            // picked up by the poll below at the next refresh.
            TerminalInput::Idle | TerminalInput::Ready => {}
        }
        if !event::poll(Duration::ZERO)? {
            continue;
        }
        let Event::Key(key) = event::read()? else {
            continue;
        };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        notice = None;
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let pane = &mut panes[focus];
        match key.code {
            KeyCode::Char('q' | 'c') if ctrl => return Ok(()),
            KeyCode::Char('d') if ctrl => pane.input.close(),
            KeyCode::Char('s') if ctrl && pane.display.is_some() => {
                let view = pane.display.as_ref().and_then(DisplayWatch::view);
                let save = |view| match screenshots {
                    Ok(directory) => screen::save(directory.as_fd(), &pane.name, view),
                    Err(error) => Err(error.clone()),
                };
                notice = Some(match view.map(save) {
                    Some(Ok(file)) => format!("saved {file}"),
                    Some(Err(error)) => format!("no screenshot: {error}"),
                    None => "no screenshot: nothing drawn yet".to_string(),
                });
            }
            KeyCode::Tab | KeyCode::Right => focus = (focus + 1) % panes.len(),
            KeyCode::BackTab | KeyCode::Left => focus = (focus + panes.len() - 1) % panes.len(),
            KeyCode::PageUp => pane.scroll += 10,
            KeyCode::PageDown => pane.scroll = pane.scroll.saturating_sub(10),
            KeyCode::Home => pane.scroll = MAX_LINES,
            KeyCode::End => pane.scroll = 0,
            _ => {
                if let Some(bytes) = key_bytes(&key) {
                    pane.input.send(&bytes);
                }
            }
        }
    }
}

/// The bytes a key sends to a guest, as a terminal would send them.
fn key_bytes(key: &KeyEvent) -> Option<Vec<u8>> {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    match key.code {
        KeyCode::Char(c) if ctrl && c.is_ascii_alphabetic() => {
            Some(vec![(c.to_ascii_lowercase() as u8) - b'a' + 1])
        }
        KeyCode::Char(c) => Some(c.to_string().into_bytes()),
        KeyCode::Enter => Some(vec![b'\n']),
        KeyCode::Backspace => Some(vec![0x08]),
        KeyCode::Esc => Some(vec![0x1b]),
        KeyCode::Up => Some(b"\x1b[A".to_vec()),
        KeyCode::Down => Some(b"\x1b[B".to_vec()),
        _ => None,
    }
}

/// Draws every pane and the footer. With `images`, a guest's picture is left to the terminal:
/// returns, for each pane, where its picture goes (`None` for a pane without one).
fn draw(
    frame: &mut Frame,
    panes: &[Pane],
    focus: usize,
    notice: Option<&str>,
    images: bool,
) -> Vec<Option<Rect>> {
    let mut pictures = vec![None; panes.len()];
    let [grid, footer] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(frame.area());
    for (index, (pane, area)) in panes.iter().zip(grid_cells(grid, panes.len())).enumerate() {
        pictures[index] = draw_pane(frame, pane, area, index == focus, images);
    }
    let all_ended = panes.iter().all(|pane| pane.seen.ended.is_some());
    let screens = panes.iter().any(|pane| pane.display.is_some());
    let help = match (notice, all_ended, screens) {
        (Some(notice), ..) => notice,
        (None, true, false) => "all guests have ended · Ctrl-Q quit · Tab focus · PgUp/PgDn scroll",
        (None, true, true) => {
            "all guests have ended · Ctrl-Q quit · Tab focus · Ctrl-S save the screen · PgUp/PgDn scroll"
        }
        (None, false, false) => {
            "Ctrl-Q quit · Tab focus · PgUp/PgDn scroll · Ctrl-D end input · keys go to the focused guest"
        }
        (None, false, true) => {
            "Ctrl-Q quit · Tab focus · Ctrl-S save the screen · Ctrl-D end input · keys go to the focused guest"
        }
    };
    frame.render_widget(
        Paragraph::new(help).style(Style::new().add_modifier(Modifier::REVERSED)),
        footer,
    );
    pictures
}

/// Splits `area` into `count` cells: a grid as square as the count allows.
fn grid_cells(area: Rect, count: usize) -> Vec<Rect> {
    let columns = (1..=count).find(|c| c * c >= count).unwrap_or(1);
    let rows = count.div_ceil(columns);
    let row_areas = Layout::vertical(vec![Constraint::Ratio(1, rows as u32); rows]).split(area);
    row_areas
        .iter()
        .flat_map(|row| {
            Layout::horizontal(vec![Constraint::Ratio(1, columns as u32); columns])
                .split(*row)
                .to_vec()
        })
        .take(count)
        .collect()
}

/// Draws one pane; returns where its picture goes when the terminal shows it (`images`).
fn draw_pane(
    frame: &mut Frame,
    pane: &Pane,
    area: Rect,
    focused: bool,
    images: bool,
) -> Option<Rect> {
    let (state, colour) = match pane.seen.ended.clone() {
        None => ("running".to_string(), Color::Yellow),
        Some((0, description)) => (description, Color::Green),
        Some((status, description)) => (format!("{description} (status {status})"), Color::Red),
    };
    let exits = pane.seen.exits;
    let plural = if exits == 1 { "" } else { "s" };
    let view = pane.display.as_ref().and_then(DisplayWatch::view);
    let mode = view.map(|view| format!(" · {}", screen::describe(view)));
    let title = format!(
        " {} {state} · {exits} exit{plural}{} ",
        pane.title,
        mode.unwrap_or_default()
    );
    let border = if focused {
        Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)
    } else {
        Style::new()
    };
    let block = Block::new()
        .borders(Borders::ALL)
        .border_style(border)
        .title(Line::styled(title, Style::new().fg(colour)));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    // The screen on top, the output below it (at least OUTPUT_ROWS of it, with its rule).
    let mut picture_area = None;
    let output_area = match view {
        Some(view) => {
            let rows = screen::rows_needed(
                view,
                inner.width,
                inner.height.saturating_sub(OUTPUT_ROWS + 1),
            );
            let screen_area = Rect {
                height: rows,
                ..inner
            };
            screen::draw(frame.buffer_mut(), screen_area, view, images);
            if images && matches!(view, View::Graphics(_)) {
                picture_area = Some(screen_area);
            }
            let rest = Rect {
                y: inner.y + rows,
                height: inner.height - rows,
                ..inner
            };
            let rule = Block::new().borders(Borders::TOP).title(" output ");
            let text_area = rule.inner(rest);
            frame.render_widget(rule, rest);
            text_area
        }
        None => inner,
    };
    let inner_height = output_area.height as usize;
    let text = pane.text.lock().unwrap_or_else(|p| p.into_inner());
    let lines: Vec<&str> = text.all_lines().collect();
    // The newest lines, `scroll` lines up from the bottom.
    let bottom = lines.len().saturating_sub(pane.scroll.min(lines.len()));
    let top = bottom.saturating_sub(inner_height);
    let shown: Vec<Line> = lines[top..bottom].iter().map(|l| Line::raw(*l)).collect();
    frame.render_widget(Paragraph::new(shown), output_area);
    picture_area
}

/// Sends the kitty graphics protocol's images for the panes whose picture changed or moved since
/// it was last sent, and deletes the image of a pane that no longer shows one.
fn send_pictures(
    panes: &[Pane],
    pictures: &[Option<Rect>],
    sent: &mut [Option<(u64, Rect)>],
) -> io::Result<()> {
    let mut out = Vec::new();
    for (index, (pane, area)) in panes.iter().zip(pictures).enumerate() {
        // Image ids from 1 (0 means "none" to the protocol).
        let id = index as u32 + 1;
        let Some(display) = pane.display.as_ref() else {
            continue;
        };
        match (area, display.view()) {
            (Some(area), Some(View::Graphics(picture))) => {
                let now = (display.generation(), *area);
                if sent[index] != Some(now) {
                    out.extend_from_slice(&screen::kitty_image(id, picture, *area));
                    sent[index] = Some(now);
                }
            }
            _ if sent[index].is_some() => {
                out.extend_from_slice(format!("\x1b_Ga=d,d=I,i={id},q=2\x1b\\").as_bytes());
                sent[index] = None;
            }
            _ => {}
        }
    }
    if !out.is_empty() {
        let mut stdout = io::stdout().lock();
        stdout.write_all(&out)?;
        stdout.flush()?;
    }
    Ok(())
}

/// What the terminal (stdin: `run` checks that it is one) has for the view.
#[derive(Debug, PartialEq, Eq)]
enum TerminalInput {
    Ready,
    Idle,
    HungUp,
}

/// Waits up to `timeout` for a key on the terminal, or for it to hang up.
///
/// The view never lets crossterm wait on the terminal itself: crossterm 0.29 reads it in a loop
/// that ends only on "would block", and a terminal that has gone away reads as end of file for
/// ever, so crossterm would spin there at 100% of a CPU, deaf to every signal. Closing a window
/// usually sends SIGHUP first (`install_signal_handlers` ends the process), but not when the
/// shell that started mini-kvm ignores SIGHUP (`trap '' HUP`, `nohup`) and so never exits and
/// passes it on: then only `poll` tells (POLLHUP). crossterm is called with a zero timeout after
/// this, so it reads only what is there; a hang-up in the microseconds between the two calls
/// would still catch it.
fn wait_for_terminal(timeout: Duration) -> TerminalInput {
    let mut stdin = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd. An interrupted poll (a signal: SIGWINCH, SIGTERM) is Idle: the
    // loop checks the signal flag before it waits again.
    let ready = unsafe { libc::poll(&mut stdin, 1, millis) };
    if ready <= 0 {
        TerminalInput::Idle
    } else if stdin.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        TerminalInput::HungUp
    } else {
        TerminalInput::Ready
    }
}

/// Ends mini-kvm when its terminal has gone away: there is no terminal left to restore or to
/// print on, so it ends at once, with the status SIGHUP's default action would give (129); the
/// guests' VMs go with the process.
fn end_with_hangup() -> ! {
    // SAFETY: _exit is async-signal-safe, and ends the process without running anything else.
    unsafe { libc::_exit(128 + libc::SIGHUP) }
}

/// Has the terminal on stdin hung up? (`poll` says so without reading; it is async-signal-safe.)
fn terminal_hung_up() -> bool {
    wait_for_terminal(Duration::ZERO) == TerminalInput::HungUp
}

fn install_signal_handlers() {
    extern "C" fn on_signal(signal: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
        // A terminal that went away (its window closed, tmux killed) sends SIGHUP, and from then
        // on reads as end of file: crossterm would spin on it inside its event loop, never
        // returning to check the flag. There is no terminal left to restore: end at once, as
        // SIGHUP's default action would (the guests' VMs go with the process).
        if signal == libc::SIGHUP && terminal_hung_up() {
            end_with_hangup();
        }
        SIGNALLED.store(true, Ordering::Relaxed);
    }
    for signal in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT] {
        // Without the handler the default action still ends the process; only the terminal
        // would be left raw, so a failure here is not worth stopping for.
        let _ = register_signal_handler(signal, on_signal);
    }
}
