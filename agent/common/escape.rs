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

/// `text` with JSON's escapes decoded (`\"`, `\\`, `\/`, `\n`, `\u0026`…); others kept.
pub(crate) fn json_unescaped(text: &str) -> String {
    let mut decoded = String::with_capacity(text.len());
    let mut characters = text.chars().peekable();
    while let Some(character) = characters.next() {
        if character != '\\' {
            decoded.push(character);
            continue;
        }
        match characters.peek().copied() {
            Some(escaped @ ('"' | '\\' | '/')) => decoded.push(escaped),
            Some('n') => decoded.push('\n'),
            Some('r') => decoded.push('\r'),
            Some('t') => decoded.push('\t'),
            Some('b') => decoded.push('\u{8}'),
            Some('f') => decoded.push('\u{c}'),
            Some('u') => {
                let hex: String = characters.clone().skip(1).take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().filter(|_| hex.len() == 4).and_then(char::from_u32) {
                    Some(unicode) => {
                        decoded.push(unicode);
                        characters.nth(4);
                    }
                    None => decoded.push('\\'),
                }
                continue;
            }
            _ => {
                decoded.push('\\');
                continue;
            }
        }
        characters.next();
    }
    decoded
}

/// `text` with HTML's character references decoded: the named ones a server escapes with
/// (`&amp;` `&lt;` `&gt;` `&quot;` `&apos;`) and every numeric one (`&#39;`, `&#x27;`).
pub(crate) fn html_unescaped(text: &str) -> String {
    let mut decoded = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('&') {
        decoded.push_str(&rest[..start]);
        rest = &rest[start..];
        let reference = rest[1..].find(';').filter(|end| *end <= 10).map(|end| &rest[1..=end]);
        let character = reference.and_then(|name| match name {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => {
                let number = name.strip_prefix('#')?;
                let code = match number.strip_prefix(['x', 'X']) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                    None => number.parse().ok()?,
                };
                char::from_u32(code)
            }
        });
        match (character, reference) {
            (Some(character), Some(name)) => {
                decoded.push(character);
                rest = &rest[name.len() + 2..];
            }
            _ => {
                decoded.push('&');
                rest = &rest[1..];
            }
        }
    }
    decoded.push_str(rest);
    decoded
}

/// `first` and each cause of `error` after it (the error itself included), joined by ": ",
/// leaving out a cause whose text is already said: an error from a library, as one line.
pub(crate) fn with_causes(first: &str, error: &dyn std::error::Error) -> String {
    let mut text = first.to_owned();
    let mut source = Some(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
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
        assert_eq!(json_unescaped(r#"a\"b\\c\/d\n\u0026\u003c\x\u12"#), "a\"b\\c/d\n&<\\x\\u12");
        assert_eq!(
            html_unescaped("it&#x27;s &amp;&lt;&gt;&quot;&#34;&apos; &nope; & &#xZZ;"),
            "it's &<>\"\"' &nope; & &#xZZ;"
        );
    }
}
