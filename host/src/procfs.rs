//! Fields of the `/proc` text files more than one stage reads: the BPF
//! source's memory-pressure relief and the /proc poller both read
//! `/proc/net/sockstat`, and must read it the same way.

/// The number after the word `field` on the line of `text` whose first
/// word is `label`: `mem` of `TCP:` in `TCP: inuse 1 orphan 0 tw 0 alloc 1
/// mem 12` is 12 (`/proc/net/sockstat`, `/proc/net/sockstat6`).
pub fn labelled_field(text: &str, label: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.split_whitespace().next() == Some(label))?;
    let mut words = line.split_whitespace();
    while let Some(word) = words.next() {
        if word == field {
            return words.next()?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::labelled_field;

    #[test]
    fn reads_the_number_after_a_field_of_a_labelled_line() {
        let text = "sockets: used 5\nTCP: inuse 1 orphan 0 tw 0 alloc 1 mem 12\nFRAG: inuse 2 memory 8192\n";
        assert_eq!(labelled_field(text, "TCP:", "mem"), Some(12));
        assert_eq!(labelled_field(text, "FRAG:", "memory"), Some(8192));
        assert_eq!(labelled_field(text, "UDP:", "mem"), None);
        assert_eq!(labelled_field("TCP: inuse 1 mem\n", "TCP:", "mem"), None);
    }
}
