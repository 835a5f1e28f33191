//! The Korean edition of the book (`book/ko/`) is kept in step with its English original
//! (`book/src/`). Each file of `book/ko/src/` translates the English chapter of the same name,
//! except the pages only the Korean edition has (its SUMMARY.md and a page about the edition).
//!
//! The transcripts are checked once: `tests/transcripts.rs` runs the English ones, and this test
//! checks that each Korean chapter shows the very same `console` blocks, in the same order. Likewise the
//! "Where mini-kvm does this" pointers and the steps' line counts must be the English ones (and
//! the line counts the real ones), and every relative link of the Korean edition must lead to a
//! file, and to a heading when it names one.
//!
//! **A forgotten update.** When an English chapter changes, its translation must follow. No date
//! or recorded hash tells that reliably (a hash fails on every typo fixed in English, and gets
//! copied over without a look at the Korean), so the test compares what a translation keeps from
//! its original: the *skeleton* of the chapter. Section by section (`##`), the two must have the
//! same number of paragraphs, list items, table rows and images, the same code blocks (in `sh`
//! blocks, a comment after ` # ` may be translated), the same set of inline code spans, the same
//! link targets, and every number of the English prose (Korean may write a number where English
//! writes a word: "zeroed" is "0으로 채워진"). A paragraph, an exercise, a table row, a function
//! name or a link added to or taken from the English chapter, or a number added or changed in
//! it, fails the test, naming the chapter and the section; the Korean text cannot be made to
//! pass without saying the same things. What it cannot see is a sentence reworded with no
//! number or code in it.
//!
//! This test reads files only: no KVM, no example binaries.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Component, Path, PathBuf};

/// The English chapters that have a Korean translation, under the same file name.
const TRANSLATIONS: &[&str] = &[
    "introduction.md",
    "concepts.md",
    "ch01-first-exit.md",
    "ch02-port-io.md",
    "ch03-guest-memory.md",
    "glossary.md",
];

/// The Korean edition's own pages, which translate nothing.
const KOREAN_ONLY: &[&str] = &["SUMMARY.md", "korean-edition.md", "exercises.md"];

/// The translated chapters that teach a step, and the step's example.
const STEP_CHAPTERS: &[(&str, &str)] = &[
    ("ch01-first-exit.md", "step01_first_exit"),
    ("ch02-port-io.md", "step02_port_io"),
    ("ch03-guest-memory.md", "step03_guest_memory"),
];

/// A step chapter's sections, in order: the English heading and its Korean translation.
const STEP_SECTIONS: [(&str, &str); 6] = [
    ("## The concept", "## 개념"),
    ("## The step", "## 이번 단계"),
    ("## What you should see", "## 실행 결과"),
    ("## What to read", "## 코드 읽기"),
    ("## Where mini-kvm does this", "## mini-kvm의 해당 코드"),
    ("## Exercises", "## 연습 문제"),
];

/// The exercises' grades: *Easy.*, *Medium.*, *Hard.*
const GRADES: [&str; 3] = ["*쉬움.*", "*보통.*", "*어려움.*"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn english(name: &str) -> PathBuf {
    repo().join("book/src").join(name)
}

fn korean(name: &str) -> PathBuf {
    repo().join("book/ko/src").join(name)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// A small Markdown reader: just the blocks a chapter of this book is made of.

/// A block of a chapter.
#[derive(Debug, Clone, PartialEq)]
enum Block {
    Heading { level: usize, text: String },
    Paragraph(String),
    Image(String),
    ListItem(String),
    TableRow(String),
    Code { info: String, lines: Vec<String> },
}

/// The blocks of Markdown `text`, in order. `file` names it in errors.
fn blocks(file: &str, text: &str) -> Vec<Block> {
    let mut found = Vec::new();
    // A paragraph, image or list item still open: the next line that is not blank, not a
    // heading and not a table row continues it.
    let mut open = false;
    let mut code: Option<(String, Vec<String>)> = None;
    for (index, line) in text.lines().enumerate() {
        if let Some((info, lines)) = &mut code {
            if line.trim_start().starts_with("```") {
                found.push(Block::Code {
                    info: std::mem::take(info),
                    lines: std::mem::take(lines),
                });
                code = None;
            } else {
                lines.push(line.to_string());
            }
            continue;
        }
        if let Some(info) = line.trim_start().strip_prefix("```") {
            code = Some((info.to_string(), Vec::new()));
            open = false;
            continue;
        }
        // A command with its output outside a console block would be a transcript unchecked.
        assert!(
            !line.starts_with("$ "),
            "{file}:{}: a `$ ` line outside a ```console block",
            index + 1
        );
        if line.trim().is_empty() {
            open = false;
        } else if let Some(level) = heading_level(line) {
            let text = line[level..].trim().to_string();
            found.push(Block::Heading { level, text });
            open = false;
        } else if line.starts_with('|') {
            found.push(Block::TableRow(line.to_string()));
            open = false;
        } else if is_list_item(line) {
            found.push(Block::ListItem(line.to_string()));
            open = true;
        } else if open {
            match found.last_mut() {
                Some(Block::Paragraph(text) | Block::Image(text) | Block::ListItem(text)) => {
                    text.push('\n');
                    text.push_str(line);
                }
                _ => unreachable!("an open block is a paragraph, an image or a list item"),
            }
        } else if line.starts_with("![") {
            found.push(Block::Image(line.to_string()));
            open = true;
        } else {
            found.push(Block::Paragraph(line.to_string()));
            open = true;
        }
    }
    assert!(code.is_none(), "{file}: a code block is not closed");
    found
}

/// `Some(n)` for a heading `#` × n followed by a space.
fn heading_level(line: &str) -> Option<usize> {
    let level = line.len() - line.trim_start_matches('#').len();
    (level > 0 && line[level..].starts_with(' ')).then_some(level)
}

/// `- item` or `12. item`, at the start of the line.
fn is_list_item(line: &str) -> bool {
    if line.starts_with("- ") {
        return true;
    }
    let digits = line.len() - line.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    digits > 0 && line[digits..].starts_with(". ")
}

/// The inline code spans of a piece of prose, in order.
fn code_spans(prose: &str) -> Vec<String> {
    prose
        .split('`')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect()
}

/// Prose without its code spans: what is between them.
fn outside_code(prose: &str) -> String {
    prose.split('`').step_by(2).collect::<Vec<_>>().join(" ")
}

/// The targets of the links and images in prose (code spans left out): `[text](target)`.
fn link_targets(prose: &str) -> Vec<String> {
    let prose = outside_code(prose);
    let mut found = Vec::new();
    for (at, _) in prose.match_indices("](") {
        let rest = &prose[at + 2..];
        if let Some(end) = rest.find(')') {
            found.push(rest[..end].to_string());
        }
    }
    found
}

/// The numbers in prose, outside code spans and link targets: `45`, `0x3f8`, `1.88`, `1K`.
/// A number starts at a digit that does not continue a word (`x86`, `ch01`: no number), and
/// goes on through ASCII letters and digits: `0x10000에` is `0x10000`, `3단계` is `3`.
fn numbers(prose: &str) -> Vec<String> {
    let mut text = outside_code(prose);
    for target in link_targets(prose) {
        text = text.replace(&format!("]({target})"), "]");
    }
    let chars: Vec<char> = text.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let continues_word = i > 0 && (chars[i - 1].is_ascii_alphanumeric() || chars[i - 1] == '_');
        if !chars[i].is_ascii_digit() || continues_word {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len()
            && (chars[i].is_ascii_alphanumeric()
                || (chars[i] == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)))
        {
            i += 1;
        }
        found.push(chars[start..i].iter().collect());
    }
    found
}

// ---------------------------------------------------------------------------------------------
// The skeleton of a chapter: what a translation keeps from its original.

/// One section of a chapter (from one heading to the next of level 1 or 2), less its words.
#[derive(Debug, Default, PartialEq)]
struct Section {
    paragraphs: usize,
    list_items: usize,
    table_rows: usize,
    images: usize,
    code_blocks: Vec<String>,
    code_spans: BTreeSet<String>,
    numbers: BTreeSet<String>,
    links: BTreeSet<String>,
}

/// The skeleton of a chapter: its sections, each with the heading it starts with.
fn skeleton(file: &str, text: &str) -> Vec<(String, Section)> {
    let mut sections: Vec<(String, Section)> = Vec::new();
    for block in blocks(file, text) {
        let prose = match &block {
            Block::Heading { level, text } if *level <= 2 => {
                sections.push((format!("{} {text}", "#".repeat(*level)), Section::default()));
                text.clone()
            }
            Block::Heading { text, .. } => text.clone(),
            Block::Paragraph(text)
            | Block::Image(text)
            | Block::ListItem(text)
            | Block::TableRow(text) => text.clone(),
            Block::Code { .. } => String::new(),
        };
        if sections.is_empty() {
            sections.push(("(before the first heading)".to_string(), Section::default()));
        }
        let section = &mut sections.last_mut().unwrap().1;
        match &block {
            Block::Paragraph(_) => section.paragraphs += 1,
            Block::Image(_) => section.images += 1,
            Block::ListItem(_) => section.list_items += 1,
            Block::TableRow(_) => section.table_rows += 1,
            Block::Code { info, lines } => section.code_blocks.push(code_block(info, lines)),
            Block::Heading { .. } => {}
        }
        section.code_spans.extend(code_spans(&prose));
        section.numbers.extend(numbers(&prose));
        section.links.extend(
            link_targets(&prose)
                .into_iter()
                .map(|target| target.split('#').next().unwrap().to_string())
                .filter(|path| !path.is_empty()),
        );
    }
    sections
}

/// A code block as the translation must repeat it: its info string and its lines, where a
/// comment after ` # ` in an `sh` block (`cargo test   # run every test`) may be translated.
fn code_block(info: &str, lines: &[String]) -> String {
    let lines: Vec<&str> = lines
        .iter()
        .map(|line| match (info, line.find(" # ")) {
            ("sh", Some(at)) => line[..at].trim_end(),
            _ => line.as_str(),
        })
        .collect();
    format!("```{info}\n{}", lines.join("\n"))
}

/// How a translation's skeleton differs from its original's: one line per difference, empty
/// when they agree.
fn skeleton_differences(english: &str, korean: &str) -> Vec<String> {
    let original = skeleton("English", english);
    let translation = skeleton("Korean", korean);
    if original.len() != translation.len() {
        let headings = |sections: &[(String, Section)]| {
            sections
                .iter()
                .map(|(heading, _)| heading.clone())
                .collect::<Vec<_>>()
        };
        return vec![format!(
            "{} sections in English, {} in Korean:\n  {:?}\n  {:?}",
            original.len(),
            translation.len(),
            headings(&original),
            headings(&translation)
        )];
    }
    let mut differences = Vec::new();
    for ((heading, en), (ko_heading, ko)) in original.iter().zip(&translation) {
        let mut differ = |what: &str, en: String, ko: String| {
            if en != ko {
                differences.push(format!(
                    "\"{heading}\" / \"{ko_heading}\": {what}: English {en}, Korean {ko}"
                ));
            }
        };
        differ(
            "paragraphs",
            en.paragraphs.to_string(),
            ko.paragraphs.to_string(),
        );
        differ(
            "list items",
            en.list_items.to_string(),
            ko.list_items.to_string(),
        );
        differ(
            "table rows",
            en.table_rows.to_string(),
            ko.table_rows.to_string(),
        );
        differ("images", en.images.to_string(), ko.images.to_string());
        differ(
            "code blocks",
            format!("{:?}", en.code_blocks),
            format!("{:?}", ko.code_blocks),
        );
        let only = |a: &BTreeSet<String>, b: &BTreeSet<String>| {
            a.difference(b).cloned().collect::<Vec<_>>()
        };
        for (what, en, ko) in [
            ("code spans", &en.code_spans, &ko.code_spans),
            ("link targets", &en.links, &ko.links),
        ] {
            if en != ko {
                differ(
                    what,
                    format!("alone has {:?}", only(en, ko)),
                    format!("alone has {:?}", only(ko, en)),
                );
            }
        }
        // Korean may write a number where English writes a word ("zeroed" is "0으로 채워진",
        // "decimal" "10진수"), so only the English numbers must all be there: a number changed
        // or added in English is still caught.
        let missing = only(&en.numbers, &ko.numbers);
        if !missing.is_empty() {
            differences.push(format!(
                "\"{heading}\" / \"{ko_heading}\": numbers of the English section missing in \
                 Korean: {missing:?}"
            ));
        }
    }
    differences
}

// ---------------------------------------------------------------------------------------------
// What a chapter says about the steps and mini-kvm.

/// The `console` blocks of a chapter, in order.
fn console_blocks(file: &str, text: &str) -> Vec<Vec<String>> {
    blocks(file, text)
        .into_iter()
        .filter_map(|block| match block {
            Block::Code { info, lines } if info == "console" => Some(lines),
            _ => None,
        })
        .collect()
}

/// The list items of the section under `heading` (`## ...`), empty without one.
fn section_items(file: &str, text: &str, heading: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut inside = false;
    for block in blocks(file, text) {
        match block {
            Block::Heading { level: 2, text } => inside = format!("## {text}") == heading,
            Block::ListItem(item) if inside => items.push(item),
            _ => {}
        }
    }
    items
}

/// The pointers into mini-kvm of a "Where mini-kvm does this" section, whatever its language:
/// `` - `FILE`, `FUNCTION`: what it does `` gives (FILE, FUNCTION).
fn pointers(file: &str, text: &str, heading: &str) -> Vec<(String, String)> {
    section_items(file, text, heading)
        .iter()
        .map(|item| {
            let spans = code_spans(item);
            assert!(
                spans.len() >= 2 && item.starts_with(&format!("- `{}`, `{}`:", spans[0], spans[1])),
                "{file}: a pointer is \"- `FILE`, `FUNCTION`: ...\", not {item:?}"
            );
            (spans[0].clone(), spans[1].clone())
        })
        .collect()
}

/// The steps' sizes a chapter gives: `` `examples/NAME.rs`, 116 lines `` in English,
/// `` `examples/NAME.rs`, 116줄 `` in Korean.
fn line_counts(text: &str, unit: &str) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices("`examples/") {
        let rest = &text[at + 1..];
        let Some((file, rest)) = rest.split_once('`') else {
            continue;
        };
        let count = rest
            .strip_prefix(", ")
            .and_then(|rest| rest.split_once(unit))
            .and_then(|(count, _)| count.parse::<usize>().ok());
        if let Some(count) = count {
            found.push((file.to_string(), count));
        }
    }
    found
}

/// The id mdBook gives a heading (and GitHub, for these headings): lower case, letters and
/// digits of any script kept, spaces made `-`, other signs dropped. `## 2단계: 포트 I/O와 콘솔` is
/// `2단계-포트-io와-콘솔`.
fn heading_id(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| match c {
            c if c.is_alphanumeric() || c == '_' || c == '-' => {
                Some(c.to_lowercase().next().unwrap())
            }
            c if c.is_whitespace() => Some('-'),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn every_page_of_the_korean_edition_translates_an_english_chapter_or_is_its_own() {
    let mut found: Vec<String> = fs::read_dir(repo().join("book/ko/src"))
        .expect("book/ko/src exists")
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".md"))
        .collect();
    found.sort();
    let mut expected: Vec<String> = TRANSLATIONS
        .iter()
        .chain(KOREAN_ONLY)
        .map(|name| name.to_string())
        .collect();
    expected.sort();
    assert_eq!(
        found, expected,
        "book/ko/src: a page is neither in TRANSLATIONS nor in KOREAN_ONLY, or is missing"
    );
    let summary = read(&korean("SUMMARY.md"));
    for name in TRANSLATIONS {
        assert!(
            english(name).exists(),
            "{name} translates no English chapter"
        );
        assert!(
            summary.contains(&format!("]({name})")),
            "book/ko/src/SUMMARY.md does not list {name}"
        );
    }
    assert!(summary.contains("](korean-edition.md)"));
}

#[test]
fn every_korean_transcript_is_the_english_one() {
    let mut compared = 0;
    for name in TRANSLATIONS {
        let en = console_blocks(name, &read(&english(name)));
        let ko = console_blocks(name, &read(&korean(name)));
        assert_eq!(
            ko, en,
            "book/ko/src/{name}: its ```console blocks must be those of book/src/{name}, in order \
             (tests/book.rs runs the English ones)"
        );
        compared += en.len();
    }
    for (chapter, step) in STEP_CHAPTERS {
        let shown = console_blocks(chapter, &read(&korean(chapter)));
        assert!(
            shown.iter().any(
                |block| block.first() == Some(&format!("$ cargo run --quiet --example {step}"))
            ),
            "book/ko/src/{chapter} does not show {step} running"
        );
    }
    assert!(
        compared >= STEP_CHAPTERS.len(),
        "only {compared} transcripts"
    );
}

#[test]
fn every_korean_step_chapter_has_the_shape_of_the_book() {
    let summary = read(&korean("SUMMARY.md"));
    for (chapter, _) in STEP_CHAPTERS {
        let en = read(&english(chapter));
        let ko = read(&korean(chapter));
        let mut last = 0;
        for (english_heading, korean_heading) in STEP_SECTIONS {
            assert!(
                en.contains(&format!("\n{english_heading}\n")),
                "book/src/{chapter} has no \"{english_heading}\": update STEP_SECTIONS"
            );
            let at = ko
                .find(&format!("\n{korean_heading}\n"))
                .unwrap_or_else(|| panic!("book/ko/src/{chapter} has no \"{korean_heading}\""));
            assert!(
                at > last,
                "book/ko/src/{chapter}: \"{korean_heading}\" is out of order"
            );
            last = at;
        }
        for grade in GRADES {
            assert!(
                ko[last..].contains(grade),
                "book/ko/src/{chapter}: no {grade} exercise"
            );
        }
        assert!(summary.contains(&format!("]({chapter})")));
    }
}

#[test]
fn every_korean_pointer_into_mini_kvm_is_the_english_one() {
    let (english_heading, korean_heading) = STEP_SECTIONS[4];
    for (chapter, _) in STEP_CHAPTERS {
        let en = pointers(chapter, &read(&english(chapter)), english_heading);
        let ko = pointers(chapter, &read(&korean(chapter)), korean_heading);
        assert!(!en.is_empty(), "book/src/{chapter} has no pointers");
        assert_eq!(
            ko, en,
            "book/ko/src/{chapter}: \"{korean_heading}\" must point where book/src/{chapter} does"
        );
    }
}

#[test]
fn every_korean_line_count_is_the_english_one_and_true() {
    let mut checked = 0;
    for name in TRANSLATIONS {
        let en = line_counts(&read(&english(name)), " lines");
        let ko = line_counts(&read(&korean(name)), "줄");
        assert_eq!(
            ko, en,
            "book/ko/src/{name}: its line counts (`examples/NAME.rs`, N줄) must be the English ones"
        );
        for (file, count) in ko {
            let lines = read(&repo().join(&file)).lines().count();
            assert_eq!(
                count, lines,
                "book/ko/src/{name}: says {file} has {count} lines"
            );
            checked += 1;
        }
    }
    assert!(checked >= STEP_CHAPTERS.len(), "only {checked} line counts");
}

#[test]
fn every_korean_chapter_keeps_the_skeleton_of_its_original() {
    let mut failures = Vec::new();
    for name in TRANSLATIONS {
        for difference in skeleton_differences(&read(&english(name)), &read(&korean(name))) {
            failures.push(format!("book/ko/src/{name}: {difference}"));
        }
    }
    assert!(
        failures.is_empty(),
        "the Korean edition lags behind the English chapters (translate what changed, one \
         paragraph or item for one):\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_skeleton_catches_a_forgotten_update() {
    let english = read(&english("ch02-port-io.md"));
    let korean = read(&korean("ch02-port-io.md"));
    assert_eq!(
        skeleton_differences(&english, &korean),
        Vec::<String>::new()
    );
    // Each change an English author might make, and the Korean edition not follow.
    let changes = [
        (
            "a paragraph",
            "## What you should see\n\n",
            "## What you should see\n\nNew.\n\n",
        ),
        ("a number", "45 exits", "46 exits"),
        ("a code span", "`KVM_SET_REGS`", "`KVM_SET_SREGS`"),
        (
            "an exercise",
            "\n4. *Hard.*",
            "\n4. *Hard.* One more.\n5. *Hard.*",
        ),
        (
            "a table row",
            "| 0x03 | NEWLINE",
            "| 0x04 | NOP | none | 0 |\n| 0x03 | NEWLINE",
        ),
        ("a transcript line", "\n42\n", "\n43\n"),
        (
            "a section",
            "## Exercises",
            "## More\n\nText.\n\n## Exercises",
        ),
        (
            "a link",
            "which Step 3 shows",
            "which [Step 3](ch03-guest-memory.md) shows",
        ),
    ];
    for (what, from, to) in changes {
        assert!(english.contains(from), "{what}: {from:?} is not in ch02");
        let changed = english.replacen(from, to, 1);
        assert!(
            !skeleton_differences(&changed, &korean).is_empty(),
            "adding {what} to the English chapter goes unnoticed"
        );
    }
    // A comment in an sh block may be translated; the command may not.
    let sh = |line: &str| code_block("sh", &[line.to_string()]);
    assert_eq!(sh("cargo test   # run it"), sh("cargo test   # 실행한다"));
    assert_ne!(
        sh("cargo test --lib   # run it"),
        sh("cargo test   # 실행한다")
    );
    // The reader's pieces.
    assert_eq!(
        numbers("Step 3: 0x3f8–0x3ff, 1.88, x86-64, ch01, `42` [a](ch02.md) 1K 3단계 0x10000에."),
        ["3", "0x3f8", "0x3ff", "1.88", "64", "1K", "3", "0x10000"]
    );
    assert_eq!(code_spans("a `b` c `d e` f"), ["b", "d e"]);
    assert_eq!(heading_id("2단계: 포트 I/O와 콘솔"), "2단계-포트-io와-콘솔");
    assert_eq!(heading_id("What `KVM_RUN` does"), "what-kvm_run-does");
    let hidden = std::panic::catch_unwind(|| blocks("t.md", "```text\nx\n```\n\n$ ls\n"));
    assert!(
        hidden.is_err(),
        "a $ line outside a console block must be refused"
    );
}

#[test]
fn every_relative_link_of_the_korean_edition_leads_to_a_file() {
    let book = repo().join("book/ko/src");
    let mut files: Vec<PathBuf> = TRANSLATIONS
        .iter()
        .chain(KOREAN_ONLY)
        .map(|name| korean(name))
        .collect();
    files.push(repo().join("book/ko/README.md"));
    let mut checked = 0;
    for file in files {
        let in_book = file.starts_with(&book);
        for block in blocks(&file.display().to_string(), &read(&file)) {
            let prose = match block {
                Block::Heading { text, .. }
                | Block::Paragraph(text)
                | Block::Image(text)
                | Block::ListItem(text)
                | Block::TableRow(text) => text,
                Block::Code { .. } => continue,
            };
            for target in link_targets(&prose) {
                if target.contains("://") {
                    continue;
                }
                let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
                let resolved = if path.is_empty() {
                    file.clone()
                } else {
                    file.parent().unwrap().join(path)
                };
                assert!(
                    resolved.exists(),
                    "{}: the link to {target} leads nowhere",
                    file.display()
                );
                // mdBook builds only what is under the book's src/ (a link, such as
                // book/ko/src/images, is followed): a link that leaves it is broken in the HTML
                // book.
                if in_book {
                    let mut depth = 0i32;
                    for component in Path::new(path).components() {
                        depth += match component {
                            Component::ParentDir => -1,
                            Component::Normal(_) => 1,
                            _ => 0,
                        };
                        assert!(
                            depth >= 0,
                            "{}: {target} leaves book/ko/src/, which the HTML book cannot follow \
                             (name a file outside it as code, `book/src/...`)",
                            file.display()
                        );
                    }
                }
                assert!(
                    resolved
                        .canonicalize()
                        .unwrap()
                        .starts_with(repo().canonicalize().unwrap()),
                    "{}: {target} is outside the repository",
                    file.display()
                );
                if !anchor.is_empty() {
                    let headings: Vec<String> = blocks(path, &read(&resolved))
                        .into_iter()
                        .filter_map(|block| match block {
                            Block::Heading { text, .. } => Some(heading_id(&text)),
                            _ => None,
                        })
                        .collect();
                    assert!(
                        headings.iter().any(|id| id == anchor),
                        "{}: {target}: no heading of {path} has the id {anchor} ({headings:?})",
                        file.display()
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 0);
}

#[test]
fn the_readme_points_to_the_korean_edition() {
    let readme = read(&repo().join("README.md"));
    let learn = readme
        .split("\n\n")
        .find(|paragraph| paragraph.starts_with("**Learn.**"))
        .expect("README.md has a Learn paragraph");
    assert!(learn.contains("(book/ko/README.md)"), "{learn}");
    let korean_readme = read(&repo().join("book/ko/README.md"));
    // book/ko/README.md links to the Korean introduction, relative to itself.
    let introduction = Path::new("src").join("introduction.md");
    assert!(korean_readme.contains(&format!("({})", introduction.display())));
}
