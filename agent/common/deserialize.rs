//! Reading the config's TOML into its serde types without stopping at the first mistake. serde
//! stops at the first unknown key or value of the wrong type; here each such entry is reported
//! with its line and key path, taken out of the parsed document, and the rest deserialized again,
//! until it deserializes. The checks of values run on the result, so that one run reports every
//! problem, as a compiler reports every error.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::problems::Problems;
use super::redact::may_hold_secret;

/// At most this many entries are taken out of one file; past them the file is refused with what
/// was found (each costs one more pass of serde over the document).
const MAX_ENTRIES_TAKEN_OUT: usize = 200;

/// `text` as a `T`, less every entry serde refuses, each reported in `problems`; `None` when the
/// text is no TOML (every syntax error reported) or a refusal cannot be placed in the document.
pub(crate) fn deserialize_past_mistakes<'text, T: Deserialize<'text>>(
    text: &'text str,
    problems: &mut Problems<'_>,
) -> Option<T> {
    let (document, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        for error in syntax_errors {
            let message = error.message().trim_end().replace('\n', "; ");
            match error.span() {
                Some(span) => problems.at_offset(span.start, false, "TOML syntax", message),
                None => problems.plain("TOML syntax", message),
            }
        }
        return None;
    }
    let mut document = document.into_inner();
    let mut taken_out_before: Vec<Vec<Step>> = Vec::new();
    for _ in 0..MAX_ENTRIES_TAKEN_OUT {
        let error = match T::deserialize(toml::de::Deserializer::from(Spanned::new(0..0, document.clone()))) {
            Ok(deserialized) => return Some(deserialized),
            Err(error) => error,
        };
        let message = error.message().trim_end().to_owned();
        let Some((span, path)) = error.span().filter(|span| !span.is_empty()).and_then(|span| {
            let path = locate(&document, &span)?;
            Some((span, path))
        }) else {
            // No entry to blame: refuse the file with what serde said.
            match error.span() {
                Some(span) if !span.is_empty() => problems.at_offset(span.start, false, "config", message),
                _ => problems.plain("config", message),
            }
            return None;
        };
        if taken_out_before.contains(&path) {
            // Taking it out made no progress (its problem is reported): refuse the file.
            return None;
        }
        let taken_out = take_out(&mut document, &path);
        problems.at_offset(span.start, false, &key_path(&path), describe(&message, &path, taken_out.as_ref()));
        // Nothing to take out means no progress: refuse the file with what was found.
        taken_out?;
        taken_out_before.push(path);
    }
    problems.plain("config", format_args!("more than {MAX_ENTRIES_TAKEN_OUT} problems: fix these and check again"));
    None
}

/// One step of a key path: a table's key, or an array's index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// The path of the innermost entry of `table` whose key or value holds `span`.
fn locate(table: &DeTable<'_>, span: &Range<usize>) -> Option<Vec<Step>> {
    for (key, value) in table {
        let here = || vec![Step::Key(key.get_ref().to_string())];
        // The key first: a table's value spans its `[header]`, which holds its parents' keys.
        if holds(&key.span(), span) {
            return Some(here());
        }
        if let Some(inner) = locate_in_value(value.get_ref(), span) {
            return Some([here(), inner].concat());
        }
        if holds(&value.span(), span) {
            return Some(here());
        }
    }
    None
}

/// The path, inside `value`, of the innermost entry holding `span`; arrays of scalars are taken
/// out whole, so only tables in arrays are looked into. The first of an array of tables shares
/// its span (its `[[header]]`) with the array, so a problem there is the array's.
fn locate_in_value(value: &DeValue<'_>, span: &Range<usize>) -> Option<Vec<Step>> {
    match value {
        DeValue::Table(table) => locate(table, span),
        DeValue::Array(items) => items.iter().enumerate().find_map(|(index, item)| match item.get_ref() {
            DeValue::Table(table) => locate(table, span)
                .map(|inner| [vec![Step::Index(index)], inner].concat())
                .or_else(|| (index > 0 && holds(&item.span(), span)).then(|| vec![Step::Index(index)])),
            _ => None,
        }),
        _ => None,
    }
}

fn holds(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end && !outer.is_empty()
}

/// Takes the entry at `path` out of `table` and returns it. A table in an array becomes an empty
/// table, so that the indexes of the others, which name them in messages, stay as written.
fn take_out<'text>(table: &mut DeTable<'text>, path: &[Step]) -> Option<DeValue<'text>> {
    let (Step::Key(name), rest) = path.split_first()? else {
        return None;
    };
    let key = table.keys().find(|key| key.get_ref().as_ref() == name.as_str())?.clone();
    if rest.is_empty() {
        return table.remove(&key).map(Spanned::into_inner);
    }
    take_out_of_value(table.get_mut(&key)?.get_mut(), rest)
}

fn take_out_of_value<'text>(value: &mut DeValue<'text>, path: &[Step]) -> Option<DeValue<'text>> {
    match (value, path.split_first()?) {
        (DeValue::Table(table), _) => take_out(table, path),
        (DeValue::Array(items), (Step::Index(index), rest)) => {
            let item = items.get_mut(*index)?.get_mut();
            if rest.is_empty() {
                Some(std::mem::replace(item, DeValue::Table(DeTable::new())))
            } else {
                take_out_of_value(item, rest)
            }
        }
        _ => None,
    }
}

/// `pushgateway[1].basic_auth.password`.
fn key_path(path: &[Step]) -> String {
    let mut key = String::new();
    for step in path {
        match step {
            Step::Key(name) if key.is_empty() => key.push_str(name),
            Step::Key(name) => {
                key.push('.');
                key.push_str(name);
            }
            Step::Index(index) => key.push_str(&format!("[{index}]")),
        }
    }
    key
}

/// serde's `message` about the entry at `path`, as the operator reads it: an unknown key with
/// the keys its table knows and the nearest of them; a value that may be a secret (serde quotes
/// wrong values) by its type alone.
fn describe(message: &str, path: &[Step], taken_out: Option<&DeValue<'_>>) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (unknown, known) = rest.split_once("`, ").unwrap_or((rest, ""));
        let expected: Vec<&str> = known.split('`').skip(1).step_by(2).collect();
        let nearest = expected
            .iter()
            .map(|candidate| (edit_distance(unknown, candidate), *candidate))
            .filter(|(distance, candidate)| *distance <= (candidate.chars().count() / 3).max(1))
            .min();
        let known = known.replace("there are no fields", "none expected here");
        return match nearest {
            Some((_, nearest)) => format!("unknown key: did you mean `{nearest}`? ({known})"),
            None => format!("unknown key ({known})"),
        };
    }
    if let Some(DeValue::Array(items)) = taken_out {
        // serde reads a struct from an array too, field by field, and then speaks of the first
        // element's type; an array where a table belongs is the mistake to name.
        let struct_read_from_array = message.starts_with("invalid length")
            || (!message.contains("sequence") && !message.contains("expected struct"));
        if struct_read_from_array {
            let Some(Step::Key(name)) = path.last() else {
                return "invalid type: array, expected a table".to_owned();
            };
            return match items.iter().all(|item| item.get_ref().is_table()) {
                true => format!("invalid type: array of tables, expected a table: write [{name}] once, not [[{name}]]"),
                false => "invalid type: array, expected a table".to_owned(),
            };
        }
    }
    let segments: Vec<&str> = path
        .iter()
        .filter_map(|step| match step {
            Step::Key(name) => Some(name.as_str()),
            Step::Index(_) => None,
        })
        .collect();
    let message = in_toml_words(message);
    if !may_hold_secret(&segments) {
        return message;
    }
    let kind = taken_out.map_or("value", DeValue::type_str);
    match message.rsplit_once(", expected ") {
        Some((_, expected)) => format!("wrong type: {kind} (not shown: it may be a secret), expected {expected}"),
        None => format!("not usable: {kind} (not shown: it may be a secret)"),
    }
}

/// serde's words for TOML's: a map is a table, a sequence an array, and a struct (named as the
/// agent's code names it) a table.
fn in_toml_words(message: &str) -> String {
    let mut message = message
        .replace("invalid type: map", "invalid type: table")
        .replace("invalid type: sequence", "invalid type: array")
        .replace("expected a map", "expected a table")
        .replace("expected a sequence", "expected an array")
        .replace("expected i64", "expected an integer");
    while let Some(start) = message.find("expected struct ") {
        let name_start = start + "expected struct ".len();
        let name_end = message[name_start..]
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .map_or(message.len(), |end| name_start + end);
        message.replace_range(start..name_end, "expected a table");
    }
    message
}

/// Levenshtein distance, for suggesting the key meant.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, a_char) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, b_char) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(a_char != *b_char);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[serde(default)]
        inner: Inner,
        #[serde(default)]
        targets: Vec<Target>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        interval: Option<String>,
        count: Option<i64>,
        #[serde(default)]
        headers: BTreeMap<String, String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Target {
        url: Option<String>,
        password: Option<String>,
    }

    fn problems_in(text: &str) -> (Option<Outer>, Vec<String>) {
        let mut problems = Problems::new(text);
        let outer = deserialize_past_mistakes::<Outer>(text, &mut problems);
        (outer, problems.into_messages())
    }

    #[test]
    fn every_unknown_key_and_wrong_type_is_reported_and_the_rest_kept() {
        let text = "[inner]\nintervall = \"15s\"\ncount = \"many\"\nheaders = { a = \"b\", c = 1 }\n\
                    [[targets]]\nurl = \"http://a\"\n\
                    [[targets]]\nurl = \"http://b\"\nsurprise = { deep = [1, 2] }\n\
                    [extra.table]\nx = 1\n";
        let (outer, problems) = problems_in(text);
        assert_eq!(
            problems,
            [
                "line 2: inner.intervall: unknown key: did you mean `interval`? (expected one of `interval`, `count`, \
                 `headers`)",
                "line 3: inner.count: invalid type: string \"many\", expected an integer",
                "line 4: inner.headers.c: wrong type: integer (not shown: it may be a secret), expected a string",
                "line 9: targets[1].surprise: unknown key (expected `url` or `password`)",
                "line 10: extra: unknown key (expected `inner` or `targets`)",
            ]
        );
        let outer = outer.unwrap();
        assert_eq!((outer.inner.interval, outer.inner.count), (None, None));
        assert_eq!(outer.inner.headers, BTreeMap::from([("a".to_owned(), "b".to_owned())]));
        assert_eq!(outer.targets.len(), 2);
        assert_eq!(outer.targets[1].url.as_deref(), Some("http://b"));
    }

    #[test]
    fn a_wrong_typed_secret_is_named_by_its_key_never_its_value() {
        let text = "[[targets]]\npassword = [\"hunter2\"]\n[[targets]]\nurl = { user = \"admin:s3cret\" }\n";
        let (outer, problems) = problems_in(text);
        assert_eq!(
            problems,
            [
                "line 2: targets[0].password: wrong type: array (not shown: it may be a secret), expected a string",
                "line 4: targets[1].url: wrong type: table (not shown: it may be a secret), expected a string",
            ]
        );
        let targets = outer.unwrap().targets;
        assert_eq!((targets[0].password.as_deref(), targets[1].url.as_deref()), (None, None));
    }

    #[test]
    fn a_table_of_the_wrong_type_is_taken_out_whole() {
        let (outer, problems) = problems_in("inner = 5\ntargets = [1, 2]\n[[other]]\n");
        assert_eq!(
            problems,
            [
                "line 1: inner: invalid type: integer `5`, expected a table",
                "line 2: targets: invalid type: integer `1`, expected a table",
                "line 3: other: unknown key (expected `inner` or `targets`)",
            ]
        );
        let (_, problems) = problems_in("inner = [\"1s\"]\n");
        assert_eq!(problems, ["line 1: inner: invalid type: array, expected a table"]);
        assert!(outer.is_some());
    }

    #[test]
    fn an_array_of_tables_where_a_table_belongs_is_reported_once_and_taken_out() {
        let (outer, problems) = problems_in("[[inner]]\ninterval = \"1s\"\n[[inner]]\n[[targets]]\nurl = \"u\"\n");
        assert_eq!(
            problems,
            ["line 1: inner: invalid type: array of tables, expected a table: write [inner] once, not [[inner]]"]
        );
        assert_eq!(outer.unwrap().targets[0].url.as_deref(), Some("u"));
    }

    #[test]
    fn syntax_errors_are_reported_with_their_lines() {
        let (outer, problems) = problems_in("[inner]\ninterval = 15s\n");
        assert!(outer.is_none());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("line 2: TOML syntax: "), "{problems:?}");
    }

    #[test]
    fn a_file_of_mistakes_ends_after_the_most_there_may_be() {
        let text: String = (0..300).map(|n| format!("key{n} = {n}\n")).collect();
        let (outer, problems) = problems_in(&text);
        assert!(outer.is_none());
        assert_eq!(problems.len(), MAX_ENTRIES_TAKEN_OUT + 1);
        assert!(problems.last().unwrap().contains("more than 200 problems"), "{problems:?}");
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("intervall", "interval"), 1);
        assert_eq!(edit_distance("windw", "window"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
