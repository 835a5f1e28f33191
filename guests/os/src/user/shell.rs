//! The shell: the menu of the original 1K OS. Each choice runs its program as a new process
//! (`spawn`) and waits for it (`wait`). The disk commands (`ls`, `cat`, `write`, `sum`, `random`) run
//! in the shell itself (files.rs).

use crate::abi::program;
use crate::io::{Out, print, read_line};
use crate::{files, sys};

const MENU: &[u8] = concat!(
    "\n=== 1K OS Menu ===\n\n",
    "  1. Multiplication Table (2x1 ~ 9x9)\n",
    "  2. Counter (0-9)\n",
    "  3. Echo (interactive)\n",
    "  4. Fibonacci Sequence\n",
    "  5. Prime Numbers (up to 100)\n",
    "  6. Calculator\n",
    "  7. Factorial (0! ~ 12!)\n",
    "  8. GCD (Greatest Common Divisor)\n",
    "  9. About 1K OS\n",
    "  0. Exit\n",
    "\nSelect: ",
)
.as_bytes();

const GOODBYE: &[u8] = b"\nExiting shell...\nThank you for using 1K OS!\n";

pub fn main() -> i64 {
    loop {
        print(MENU);
        // End of input is the same as `0`.
        let Some(line) = read_line() else {
            print(GOODBYE);
            return 0;
        };
        match line.text() {
            b"" => {} // an empty line redraws the menu
            b"0" => {
                print(GOODBYE);
                return 0;
            }
            // Not in the menu (its text is the original's): the process list, and a program
            // that reads address 0 to show a user fault being contained.
            b"p" => run(program::PS),
            b"null" => run(program::NULL),
            // The disk and the entropy device (mini-kvm --disk FILE, --rng).
            b"ls" => files::ls(),
            b"random" => files::random(),
            b"cat" => files::cat(b""),
            b"write" => files::write(b"", line.truncated),
            b"sum" => files::sum(b""),
            [b'c', b'a', b't', b' ', name @ ..] => files::cat(name),
            [b'w', b'r', b'i', b't', b'e', b' ', rest @ ..] => files::write(rest, line.truncated),
            [b's', b'u', b'm', b' ', name @ ..] => files::sum(name),
            &[digit @ b'1'..=b'9'] => run(program::MULTIPLICATION + u64::from(digit - b'1')),
            other => {
                Out::new()
                    .s(b"Unknown option: ")
                    .s(other)
                    .s(b"\nPlease select 0-9\n");
            }
        }
    }
}

/// Runs `program` as a child process and waits until it ends (or is killed).
fn run(program: u64) {
    let pid = sys::spawn(program);
    if pid < 0 {
        print(b"shell: cannot start the program: no free process slot or memory\n");
        return;
    }
    sys::wait(pid);
}
