//! Text a policy hands the host (log messages, scenarios, reasons, manifest
//! phrases) ends up in the host's log and on terminals. It is made
//! printable before it gets there: a control character could otherwise end
//! a log line and forge the next one, or drive a terminal (escape sequences).
//! Errors in text an administrator or a manifest wrote are placed by line
//! and column.

/// Longest scenario kept from a policy, in bytes.
pub const MAX_SCENARIO: usize = 120;
/// Longest reason kept from a policy, in bytes.
pub const MAX_REASON: usize = 400;

/// A policy's scenario, printable and cut to [`MAX_SCENARIO`].
pub fn scenario(text: &str) -> String {
    printable(text, MAX_SCENARIO)
}

/// A policy's reason, printable and cut to [`MAX_REASON`].
pub fn reason(text: &str) -> String {
    printable(text, MAX_REASON)
}

/// `text` with every control character escaped (`\n`, `\u{1b}`, ...) and
/// cut to at most `max` bytes, on a character boundary.
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() >= max {
            break;
        }
    }
    if out.len() > max {
        let mut end = max;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

/// 1-based line and column of a TOML error, for one-line messages.
pub fn line_column(text: &str, error: &toml::de::Error) -> (usize, usize) {
    line_column_at(text, error.span().map_or(0, |s| s.start))
}

/// 1-based line and column of the byte at `offset` (a `toml::Spanned`
/// value's start), for errors found after parsing.
pub fn line_column_at(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_cannot_forge_lines_or_drive_terminals() {
        assert_eq!(printable("a\nINFO fake line\r", 100), "a\\nINFO fake line\\r");
        assert_eq!(printable("red \u{1b}[31m", 100), "red \\u{1b}[31m");
        assert!(!printable("x\u{7}\u{0}y\u{85}", 100).chars().any(char::is_control));
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        assert_eq!(printable(&"x".repeat(500), 10).len(), 10);
        let cut = printable(&"é".repeat(100), 11);
        assert!(cut.len() <= 11 && cut.chars().all(|c| c == 'é'), "{cut}");
    }
}
