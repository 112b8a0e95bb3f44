//! Writing text from outside (a receiver's answer, a name from the database, a secret) so that
//! it shows as text wherever it goes: on one line in a log, inside a JSON string, in HTML, in a
//! URL.

/// `text` with its control characters written as escapes (`\n`, `\t`, `\u{1b}`), and the
/// Unicode line and paragraph separators too, so that it shows on one line and moves no cursor:
/// for every text from outside (a receiver's answer) and every log record; with `keep_escape`,
/// the escape character stays (the log's own colours on a terminal).
pub fn escape_controls(text: &str, keep_escape: bool) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        let control = character.is_control() || matches!(character, '\u{2028}' | '\u{2029}');
        if control && !(keep_escape && character == '\u{1b}') {
            escaped.extend(character.escape_default());
        } else {
            escaped.push(character);
        }
    }
    escaped
}

/// `text` as it stands inside a JSON string (and, for `"`, `\\` and a line break, inside an
/// exposition label value).
pub(crate) fn json_escaped(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '"' => escaped.push_str("\\\""),
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            '\u{8}' => escaped.push_str("\\b"),
            '\u{c}' => escaped.push_str("\\f"),
            control if control < ' ' => escaped.push_str(&format!("\\u{:04x}", control as u32)),
            other => escaped.push(other),
        }
    }
    escaped
}

/// `text` with `&`, `<`, `>` and both quotes written as HTML character references.
pub(crate) fn html_escaped(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// `text` with every byte but the unreserved ones (`A-Z a-z 0-9 - . _ ~`) percent-encoded.
pub(crate) fn percent_encoded(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// `text` with its `%XX` escapes decoded (a URL's user name or password as sent); an escape that
/// is not one, or bytes that are not UTF-8, are kept as they are or replaced.
pub(crate) fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = bytes.get(index + 1..index + 3).filter(|hex| hex.iter().all(u8::is_ascii_hexdigit));
        let escaped = hex.and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match (bytes[index], escaped) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                index += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_html() {
        assert_eq!(
            html_escaped("<b>\"Mpesa\" & 'B2C'</b>"),
            "&lt;b&gt;&quot;Mpesa&quot; &amp; &#39;B2C&#39;&lt;/b&gt;"
        );
    }

    #[test]
    fn text_is_escaped_for_json_and_urls() {
        assert_eq!(json_escaped("a\"b\\c\nd\u{1}"), "a\\\"b\\\\c\\nd\\u0001");
        assert_eq!(percent_encoded("p@ss word/ü~"), "p%40ss%20word%2F%C3%BC~");
        assert_eq!(percent_decoded("p%40ss%20word%2F%C3%BC~%zz%+1%4"), "p@ss word/ü~%zz%+1%4");
    }
}
