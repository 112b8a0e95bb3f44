//! The agent's modules import in one direction only: layers import downward, never back up. This test reads
//! `agent/`, draws who imports whom, and fails naming the imports on every loop, so that it stays so.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// One place a module names another: the file and line, and the path as written (a use tree flattened).
#[derive(Clone, Debug)]
pub(crate) struct Import {
    pub(crate) file: String,
    pub(crate) line: usize,
    pub(crate) path: String,
}

/// The modules (one per file) and, for each importer and imported module, the first place the import is written.
pub(crate) struct ModuleGraph {
    pub(crate) modules: BTreeSet<String>,
    pub(crate) edges: BTreeMap<(String, String), Import>,
}

/// One loop of imports: `path` starts and ends at the same module, and `imports[i]` is where `path[i]` names
/// `path[i + 1]`. `component` is every module tangled with it (its strongly connected component).
pub(crate) struct ImportCycle {
    pub(crate) component: Vec<String>,
    pub(crate) path: Vec<String>,
    pub(crate) imports: Vec<Import>,
}

/// Reads every `.rs` file under `root` (but the binary's `main.rs`) and the imports between them.
pub(crate) fn read_module_graph(root: &Path) -> Result<ModuleGraph, String> {
    let root_name = root.file_name().map_or_else(|| root.display().to_string(), |name| name.to_string_lossy().into());
    let (mut folders, mut files) = (vec![PathBuf::new()], Vec::new());
    while let Some(relative_folder) = folders.pop() {
        let folder = root.join(&relative_folder);
        let unreadable = |error| cannot_read(&folder, &error);
        for entry in fs::read_dir(&folder).map_err(unreadable)? {
            let relative_path = relative_folder.join(entry.map_err(unreadable)?.file_name());
            let path = root.join(&relative_path);
            if path.is_dir() {
                folders.push(relative_path);
            } else if let Some(module_path) = module_path(&relative_path) {
                let source = fs::read_to_string(&path).map_err(|error| cannot_read(&path, &error))?;
                let file_name = format!("{root_name}/{}", relative_path.to_string_lossy().replace('\\', "/"));
                files.push((module_path, file_name, source));
            }
        }
    }
    files.sort();
    let modules: BTreeSet<String> = files.iter().map(|(module_path, ..)| module_path.clone()).collect();
    let mut edges = BTreeMap::new();
    for (module_path, file_name, source) in &files {
        for (absolute, written, line) in module_references(module_path, source) {
            let lengths = (1..=absolute.len()).rev();
            let known = lengths.map(|length| absolute[..length].join("::")).find(|prefix| modules.contains(prefix));
            let Some(target) = known.filter(|target| target != module_path) else { continue };
            let import = Import { file: file_name.clone(), line, path: written };
            edges.entry((module_path.clone(), target)).or_insert(import);
        }
    }
    Ok(ModuleGraph { modules, edges })
}

fn cannot_read(path: &Path, error: &std::io::Error) -> String {
    format!("cannot read {}: {error}", path.display())
}

/// `lib.rs` → `crate`, `foo.rs` and `foo/mod.rs` → `crate::foo`, `foo/bar.rs` → `crate::foo::bar`; the root's
/// `main.rs` (the binary) is no module of the library, nor is a file not ending in `.rs`.
fn module_path(relative_path: &Path) -> Option<String> {
    let module_path =
        format!("crate::{}", relative_path.to_string_lossy().strip_suffix(".rs")?.replace(['/', '\\'], "::"));
    match module_path.as_str() {
        "crate::main" => None,
        "crate::lib" | "crate::mod" => Some("crate".to_string()),
        _ => Some(module_path.strip_suffix("::mod").unwrap_or(&module_path).to_string()),
    }
}

/// Tokens, each with its line; paths (segments), each with the line it ends on.
type Tokens = [(String, usize)];
type Paths = Vec<(Vec<String>, usize)>;

fn text(tokens: &Tokens, index: usize) -> &str {
    tokens.get(index).map_or("", |(text, _)| text.as_str())
}

/// Every `crate::`, `super::` and `self::` path in a file's non-test code, in use declarations or inline, and
/// use paths starting at a child module the file declares: each as the absolute path it names, as written, and
/// its line. Inline modules are followed (for what `self` and `super` mean in them); `#[cfg(test)]` items skipped.
fn module_references(module_path: &str, source: &str) -> Vec<(Vec<String>, String, usize)> {
    let tokens = tokenize(source);
    let at = |index: usize| text(&tokens, index);
    let children: BTreeSet<&str> = (0..tokens.len())
        .filter(|index| at(*index) == "mod" && at(index + 2) == ";")
        .map(|index| at(index + 1))
        .collect();
    let mut module: Vec<String> = module_path.split("::").map(String::from).collect();
    let (mut references, mut inline_modules, mut depth, mut index) = (Vec::new(), Vec::new(), 0usize, 0);
    while index < tokens.len() {
        let mut paths = Vec::new();
        match at(index) {
            "#" if (1..=6).map(|offset| at(index + offset)).eq(["[", "cfg", "(", "test", ")", "]"]) => {
                let item = item_start(&tokens, index + 7);
                let is_item = ["mod", "use", "fn", "impl", "const", "static"].contains(&at(item));
                index = if is_item { item_end(&tokens, item) } else { index + 7 };
            }
            "mod" if at(index + 2) == "{" => {
                inline_modules.push(depth + 1);
                module.push(at(index + 1).to_string());
                index += 2;
            }
            "{" => (depth, index) = (depth + 1, index + 1),
            "}" => {
                if inline_modules.last() == Some(&depth) {
                    inline_modules.pop();
                    module.pop();
                }
                (depth, index) = (depth.saturating_sub(1), index + 1);
            }
            "use" if at(index + 1) != "<" => index = parse_use_tree(&tokens, index + 1, Vec::new(), &mut paths),
            "crate" | "super" | "self"
                if at(index + 1) == "::"
                    && (index == 0 || at(index - 1) != "::")
                    && !(index >= 2 && at(index - 1) == "in" && at(index - 2) == "(") =>
            {
                index = parse_use_tree(&tokens, index, Vec::new(), &mut paths);
            }
            _ => index += 1,
        }
        for (segments, line) in paths {
            let n_supers = segments.iter().take_while(|segment| *segment == "super").count();
            let (mut absolute, n_skipped) = match segments[0].as_str() {
                "crate" => (vec!["crate".to_string()], 1),
                "self" => (module.clone(), 1),
                "super" if n_supers < module.len() => (module[..module.len() - n_supers].to_vec(), n_supers),
                first if children.contains(first) => (module.clone(), 0),
                _ => continue,
            };
            let rest = segments[n_skipped..].iter().filter(|segment| !matches!(segment.as_str(), "self" | "*"));
            absolute.extend(rest.cloned());
            references.push((absolute, segments.join("::").trim_end_matches("::self").to_string(), line));
        }
    }
    references
}

/// From `index`, past any attributes and a visibility, to an item's first keyword.
fn item_start(tokens: &Tokens, mut index: usize) -> usize {
    loop {
        match (text(tokens, index), text(tokens, index + 1)) {
            ("#", "[") | ("pub", "(") => index = item_end(tokens, index + 1),
            ("pub", _) => index += 1,
            _ => return index,
        }
    }
}

/// Past the item starting at `start` (its `;` outside brackets, or the `}` closing its body), or, when `start` is
/// an opening bracket, past the bracket closing it.
fn item_end(tokens: &Tokens, start: usize) -> usize {
    let opened_at_start = matches!(text(tokens, start), "(" | "[" | "{");
    let mut depth = 0usize;
    for index in start..tokens.len() {
        match text(tokens, index) {
            ";" if depth == 0 => return index + 1,
            "(" | "[" | "{" => depth += 1,
            closing @ (")" | "]" | "}") => {
                depth = depth.saturating_sub(1);
                if depth == 0 && (opened_at_start || closing == "}") {
                    return index + 1;
                }
            }
            _ => {}
        }
    }
    tokens.len()
}

/// Flattens the use tree at `index` (`crate::{a, b::{self, C}}`; or an inline path, `crate::a::f::<T>`) into
/// `paths`, each with the line of its last segment, and returns the index past it.
fn parse_use_tree(tokens: &Tokens, mut index: usize, mut path: Vec<String>, paths: &mut Paths) -> usize {
    loop {
        match text(tokens, index) {
            "::" => (path, index) = (vec!["::".to_string()], index + 1),
            "{" => {
                index += 1;
                while is_identifier(text(tokens, index)) || matches!(text(tokens, index), "{" | "*" | "::") {
                    index = parse_use_tree(tokens, index, path.clone(), paths);
                    index += usize::from(text(tokens, index) == ",");
                }
                return index + usize::from(text(tokens, index) == "}");
            }
            word if word == "*" || is_identifier(word) => {
                path.push(word.to_string());
                if text(tokens, index + 1) == "::" {
                    index += 2;
                    continue;
                }
                paths.push((path, tokens[index].1));
                return index + if text(tokens, index + 1) == "as" { 3 } else { 1 };
            }
            _ => {
                // An inline path's turbofish (`crate::a::f::<T>`) ends it here.
                if path.len() > 1 && index > 0 {
                    paths.push((path, tokens[index - 1].1));
                }
                return index;
            }
        }
    }
}

fn is_identifier(text: &str) -> bool {
    text.chars().next().is_some_and(|first| first == '_' || first.is_alphabetic())
}

fn is_identifier_char(character: char) -> bool {
    character == '_' || character.is_alphanumeric()
}

/// The file as tokens, each with its line: identifiers (and numbers), `::`, and single punctuation characters;
/// comments and string and character literals left out, lifetimes (`'a`) kept as `'` and `a`.
fn tokenize(source: &str) -> Vec<(String, usize)> {
    let chars: Vec<char> = source.chars().collect();
    let (mut tokens, mut line, mut index) = (Vec::new(), 1, 0);
    while index < chars.len() {
        let rest = &chars[index..];
        let word_length = rest.iter().take_while(|character| is_identifier_char(**character)).count();
        let word: String = rest[..word_length].iter().collect();
        let skipped_length = match rest {
            ['/', '/', ..] => Some(rest.iter().take_while(|character| **character != '\n').count()),
            ['/', '*', ..] => Some(block_comment_length(rest)),
            ['"', ..] => Some(string_length(rest)),
            ['\'', '\\', _, after @ ..] => after.iter().take(10).position(|quote| *quote == '\'').map(|at| at + 4),
            ['\'', _, '\'', ..] => Some(3),
            _ if matches!(word.as_str(), "r" | "br" | "cr") => raw_string_length(rest, word_length),
            [character, ..] if character.is_whitespace() => Some(1),
            _ => None,
        };
        let length = skipped_length.unwrap_or(if rest.starts_with(&[':', ':']) { 2 } else { word_length.max(1) });
        if skipped_length.is_none() {
            tokens.push((rest[..length].iter().collect(), line));
        }
        line += rest[..length].iter().filter(|character| **character == '\n').count();
        index += length;
    }
    tokens
}

fn block_comment_length(rest: &[char]) -> usize {
    let (mut depth, mut index) = (0usize, 0);
    while index + 1 < rest.len() {
        match (rest[index], rest[index + 1]) {
            ('/', '*') => (depth, index) = (depth + 1, index + 2),
            ('*', '/') if depth == 1 => return index + 2,
            ('*', '/') => (depth, index) = (depth - 1, index + 2),
            _ => index += 1,
        }
    }
    rest.len()
}

/// The length of the string literal `rest` starts with (at its opening `"`).
fn string_length(rest: &[char]) -> usize {
    let mut escaped = false;
    let closing = rest[1..].iter().position(|character| {
        let closes = *character == '"' && !escaped;
        escaped = *character == '\\' && !escaped;
        closes
    });
    closing.map_or(rest.len(), |at| at + 2)
}

/// The length of the raw string `rest` starts with (`r`, `br` or `cr`: `prefix_length` long), if it is one.
fn raw_string_length(rest: &[char], prefix_length: usize) -> Option<usize> {
    let n_hashes = rest[prefix_length..].iter().take_while(|character| **character == '#').count();
    let contents = prefix_length + n_hashes + 1;
    if rest.get(contents - 1) != Some(&'"') {
        return None;
    }
    let closing: Vec<char> = std::iter::once('"').chain(std::iter::repeat_n('#', n_hashes)).collect();
    let found = rest[contents..].windows(closing.len()).position(|window| window == closing.as_slice());
    Some(found.map_or(rest.len(), |at| contents + at + closing.len()))
}

/// Every import loop: for each strongly connected component of more than one module, shortest loops through its
/// modules until each of them is on one.
pub(crate) fn import_cycles(graph: &ModuleGraph) -> Vec<ImportCycle> {
    let names: Vec<&String> = graph.modules.iter().collect();
    let position: BTreeMap<&String, usize> = names.iter().enumerate().map(|(index, name)| (*name, index)).collect();
    let mut adjacency = vec![Vec::new(); names.len()];
    for (from, to) in graph.edges.keys() {
        adjacency[position[from]].push(position[to]);
    }
    let mut components = strongly_connected_components(&adjacency);
    for component in &mut components {
        component.sort_unstable();
    }
    components.sort();
    let mut cycles = Vec::new();
    for members in components.into_iter().filter(|component| component.len() > 1) {
        let mut covered = BTreeSet::new();
        for &start in &members {
            let uncovered = !covered.contains(&start);
            let Some(path) = shortest_cycle(&adjacency, &members, start).filter(|_| uncovered) else { continue };
            covered.extend(path.iter().copied());
            let path: Vec<String> = path.iter().map(|index| names[*index].clone()).collect();
            let imports =
                path.windows(2).map(|step| graph.edges[&(step[0].clone(), step[1].clone())].clone()).collect();
            let component = members.iter().map(|index| names[*index].clone()).collect();
            cycles.push(ImportCycle { component, path, imports });
        }
    }
    cycles
}

/// Tarjan's algorithm: the strongly connected components of a graph given as adjacency lists.
fn strongly_connected_components(adjacency: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct Search<'graph> {
        adjacency: &'graph [Vec<usize>],
        index: Vec<usize>,
        low_link: Vec<usize>,
        stack: Vec<usize>,
        n_visited: usize,
        components: Vec<Vec<usize>>,
    }
    fn visit(search: &mut Search<'_>, node: usize) {
        (search.index[node], search.low_link[node]) = (search.n_visited, search.n_visited);
        search.n_visited += 1;
        search.stack.push(node);
        let adjacency = search.adjacency;
        for &next in &adjacency[node] {
            if search.index[next] == usize::MAX {
                visit(search, next);
                search.low_link[node] = search.low_link[node].min(search.low_link[next]);
            } else if search.stack.contains(&next) {
                search.low_link[node] = search.low_link[node].min(search.index[next]);
            }
        }
        if search.low_link[node] == search.index[node] {
            let split = search.stack.iter().rposition(|member| *member == node).unwrap_or(0);
            let component = search.stack.split_off(split);
            search.components.push(component);
        }
    }
    let n_nodes = adjacency.len();
    let (index, low_link) = (vec![usize::MAX; n_nodes], vec![0; n_nodes]);
    let mut search = Search { adjacency, index, low_link, stack: Vec::new(), n_visited: 0, components: Vec::new() };
    for node in 0..n_nodes {
        if search.index[node] == usize::MAX {
            visit(&mut search, node);
        }
    }
    search.components
}

/// The shortest loop from `start` back to it inside `members` (breadth first), closed: `[start, …, start]`.
fn shortest_cycle(adjacency: &[Vec<usize>], members: &[usize], start: usize) -> Option<Vec<usize>> {
    let (mut came_from, mut queue) = (BTreeMap::new(), VecDeque::from([start]));
    while let Some(node) = queue.pop_front() {
        for &next in adjacency[node].iter().filter(|next| members.contains(next)) {
            if next == start {
                let mut path = vec![start, node];
                while let Some(&previous) = came_from.get(&path[path.len() - 1]) {
                    path.push(previous);
                }
                path.reverse();
                return Some(path);
            }
            if let Entry::Vacant(unvisited) = came_from.entry(next) {
                unvisited.insert(node);
                queue.push_back(next);
            }
        }
    }
    None
}

/// The loops as a reader fixes them: each knot of modules, then each loop in it with the import behind each step.
pub(crate) fn describe_cycles(cycles: &[ImportCycle]) -> String {
    let mut description = String::new();
    for (number, cycle) in cycles.iter().enumerate() {
        if number == 0 || cycles[number - 1].component != cycle.component {
            let modules = cycle.component.join(", ");
            let _ = writeln!(description, "\n{} modules import each other: {modules}", cycle.component.len());
        }
        let _ = writeln!(description, "  {}", cycle.path.join(" → "));
        for import in &cycle.imports {
            let _ = writeln!(description, "      {}:{}: {}", import.file, import.line, import.path);
        }
    }
    description
}

#[test]
fn the_agent_has_no_import_cycle() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/agent"));
    let graph = read_module_graph(root).unwrap_or_else(|problem| panic!("{problem}"));
    assert!(graph.modules.len() >= 10, "only {} module files under {}", graph.modules.len(), root.display());
    assert!(graph.edges.len() >= 10, "only {} imports between the agent's modules", graph.edges.len());
    let cycles = import_cycles(&graph);
    assert!(
        cycles.is_empty(),
        "the agent's modules import each other in loops; each step below names the import behind it, so move what \
         both sides need down a layer (or pass it in) and drop the upward import:\n{}",
        describe_cycles(&cycles)
    );
}

/// The agent's layers, lowest first, as ARCHITECTURE.md states them: a module may import from its own layer and
/// those below, never from one above. Every module file must be in one.
const LAYERS: [&[&str]; 8] = [
    &["crate::common"],
    &["crate::source", "crate::populate"],
    &["crate::snapshot", "crate::exposition", "crate::history"],
    &["crate::http", "crate::telemetry"],
    &["crate::pushgateway", "crate::remote_write"],
    &["crate::config"],
    &["crate::ticker", "crate::scrape", "crate::http_server", "crate::status_page", "crate::run", "crate::check"],
    &["crate::demo", "crate::manual", "crate"],
];

/// The layer of `module`: that of the longest listed prefix it falls under.
fn layer_of(module: &str) -> Option<usize> {
    let under = |prefix: &str| module == prefix || module.starts_with(&format!("{prefix}::"));
    let matches = LAYERS.iter().enumerate().flat_map(|(layer, prefixes)| prefixes.iter().map(move |p| (layer, *p)));
    matches
        .filter(|(_, prefix)| *prefix != "crate" && under(prefix))
        .max_by_key(|(_, prefix)| prefix.len())
        .map_or((module == "crate").then_some(LAYERS.len() - 1), |(layer, _)| Some(layer))
}

#[test]
fn every_import_points_down_the_layers() {
    let graph = read_module_graph(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/agent"))).unwrap();
    let unplaced: Vec<&String> = graph.modules.iter().filter(|module| layer_of(module).is_none()).collect();
    assert!(unplaced.is_empty(), "modules in no layer (add them to LAYERS and to ARCHITECTURE.md): {unplaced:?}");
    let upward: Vec<String> = graph
        .edges
        .iter()
        .filter(|((from, to), _)| layer_of(to) > layer_of(from))
        .map(|((from, to), import)| format!("{from} → {to} ({}:{}: {})", import.file, import.line, import.path))
        .collect();
    assert!(upward.is_empty(), "imports that point up a layer:\n  {}", upward.join("\n  "));
    assert_eq!(layer_of("crate::remote_write::queue"), Some(4));
    assert_eq!(layer_of("crate::sourcery"), None, "a prefix is a whole module name");
}

/// Plants `files` in a folder `agent/` of its own under the temporary folder, reads it and removes it; returns the
/// loops found (each as `crate::a → crate::b → crate::a`), their description, and every import (`from → to`).
fn check_planted(test_name: &str, files: &[(&str, &str)]) -> (Vec<String>, String, Vec<String>) {
    let folder = std::env::temp_dir().join(format!("module_graph_{}_{test_name}", std::process::id()));
    for (relative_path, contents) in files {
        let path = folder.join("agent").join(relative_path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }
    let graph = read_module_graph(&folder.join("agent"));
    fs::remove_dir_all(&folder).unwrap();
    let graph = graph.unwrap();
    let cycles = import_cycles(&graph);
    let loops = cycles.iter().map(|cycle| cycle.path.join(" → ")).collect();
    let edges = graph.edges.keys().map(|(from, to)| format!("{from} → {to}")).collect();
    (loops, describe_cycles(&cycles), edges)
}

const LIB: (&str, &str) = ("lib.rs", "pub mod a;\npub mod b;\n");
const A_USES_B: (&str, &str) = ("a.rs", "use std::fmt;\nuse crate::{b::{self, B}};\npub struct A;\npub fn f() {}\n");

/// The loops in a tree where `a` imports `b`, and `b` is `b_source`; the import `a` → `b` must be found.
fn loops_when_b_is(test_name: &str, b_source: &str) -> Vec<String> {
    let (loops, _, edges) = check_planted(test_name, &[LIB, A_USES_B, ("b.rs", b_source)]);
    assert!(edges.contains(&"crate::a → crate::b".to_string()), "{edges:?}");
    loops
}

#[test]
fn a_cycle_through_grouped_use_trees_is_caught() {
    let b = ("b.rs", "use std::fmt;\nuse crate::{\n    a::{self as upward, A},\n};\npub struct B;\n");
    let (loops, description, _) = check_planted("grouped", &[LIB, A_USES_B, b]);
    assert_eq!(loops, ["crate::a → crate::b → crate::a"]);
    assert!(description.contains("agent/a.rs:2: crate::b\n"), "{description}");
    assert!(description.contains("agent/b.rs:3: crate::a\n"), "{description}");
}

#[test]
fn a_cycle_through_an_inline_path_is_caught() {
    let loops = loops_when_b_is("inline", "pub struct B;\npub fn g() -> u8 {\n    crate::a::f::<u8>();\n    1\n}\n");
    assert_eq!(loops, ["crate::a → crate::b → crate::a"]);
}

#[test]
fn a_parent_module_and_its_child_importing_each_other_is_a_cycle() {
    let parent = ("remote/mod.rs", "pub mod queue;\nuse self::queue::Queue;\npub struct Target;\n");
    let child = ("remote/queue.rs", "use super::Target;\npub struct Queue;\n");
    let (loops, ..) = check_planted("parent_child", &[("lib.rs", "pub mod remote;\n"), parent, child]);
    assert_eq!(loops, ["crate::remote → crate::remote::queue → crate::remote"]);
    // Edition 2024: `use queue::…` names the child declared with `mod queue;` as well as `use self::queue::…` does.
    let parent = ("remote/mod.rs", "use queue::Queue;\nmod queue;\npub struct Target;\n");
    let child = ("remote/queue.rs", "pub struct Queue(super::Target);\n");
    let (loops, ..) = check_planted("bare_child", &[("lib.rs", "pub mod remote;\n"), parent, child]);
    assert_eq!(loops, ["crate::remote → crate::remote::queue → crate::remote"]);
}

#[test]
fn a_three_module_cycle_through_super_super_is_caught() {
    let (loops, ..) = check_planted(
        "three",
        &[
            ("lib.rs", "pub mod sibling;\npub mod top;\n"),
            ("sibling.rs", "pub fn s() {\n    let _ = crate::top::middle::bottom::f();\n}\n"),
            ("top.rs", "pub mod middle;\nuse crate::sibling::s;\npub struct Shared;\n"),
            ("top/middle.rs", "pub mod bottom;\n"),
            ("top/middle/bottom.rs", "use super::super::Shared;\npub fn f() {}\n"),
        ],
    );
    assert_eq!(loops, ["crate::sibling → crate::top::middle::bottom → crate::top → crate::sibling"]);
}

#[test]
fn an_import_only_in_a_comment_is_no_cycle() {
    let b = "//! Used by `crate::a::A`.\n/// See crate::a::f.\n// use crate::a::A;\n/* crate::a /* nested */ crate::a::f() */\n\
             pub(crate) struct B;\n";
    assert_eq!(loops_when_b_is("comment", b), Vec::<String>::new());
}

#[test]
fn an_import_only_in_a_string_literal_is_no_cycle() {
    let b = "pub struct B;\npub const QUOTE: char = '\"';\npub const S: &str = \"use crate::a::A; \\\" crate::a::f()\";\n\
             pub(crate) const R: &str = r#\"crate::a::A \"quoted\" \"#;\npub const BYTES: &[u8] = b\"crate::a\";\n\
             pub(crate) fn first<'a>(text: &'a str) -> &'a str { text }\npub const C: char = '\\'';\n";
    assert_eq!(loops_when_b_is("string", b), Vec::<String>::new());
}

#[test]
fn an_import_only_in_a_test_module_is_no_cycle() {
    let b = "pub struct B;\n\n#[cfg(test)]\n#[allow(unused)]\nmod tests {\n    use crate::a::*;\n    fn t() {\n        \
             let _ = \"}\";\n        crate::a::f();\n    }\n}\n\n#[cfg(test)]\nuse crate::a::A;\n";
    assert_eq!(loops_when_b_is("test_module", b), Vec::<String>::new());
}

#[test]
fn an_acyclic_tree_has_no_cycle_and_every_downward_import_is_found() {
    let (loops, _, edges) = check_planted(
        "acyclic",
        &[
            ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\npub mod remote;\npub use crate::a::A;\n"),
            A_USES_B,
            ("b.rs", "pub struct B;\npub fn g() -> crate::c::C {\n    crate::c::C\n}\n"),
            ("c.rs", "pub struct C;\n"),
            ("remote/mod.rs", "pub(crate) mod queue;\npub(crate) use self::queue::Queue;\n"),
            (
                "remote/queue.rs",
                "pub(in crate::remote) struct Queue(crate::c::C);\nmod proto {\n    use super::Queue;\n}\n",
            ),
            ("main.rs", "use crate::a::A;\n"),
        ],
    );
    assert_eq!(loops, Vec::<String>::new());
    let expected = "crate → crate::a, crate::a → crate::b, crate::b → crate::c, crate::remote → crate::remote::queue, \
                    crate::remote::queue → crate::c";
    assert_eq!(edges.join(", "), expected);
}

#[test]
fn a_folder_that_cannot_be_read_is_named_in_the_error() {
    let missing = std::env::temp_dir().join(format!("module_graph_{}_missing", std::process::id()));
    let problem = read_module_graph(&missing).err().expect("a missing folder is an error");
    assert!(problem.contains(&missing.display().to_string()), "{problem}");
}

#[test]
fn comments_and_literals_are_left_out_but_lifetimes_and_lines_kept() {
    let source = "fn f<'a>(x: &'a str) -> char { /* a /* b */ c */ 'x' } // crate::a\nlet s = r##\"crate\"#\"## ;";
    let tokens: Vec<String> = tokenize(source).iter().map(|(text, line)| format!("{text}@{line}")).collect();
    let expected =
        "fn@1 f@1 <@1 '@1 a@1 >@1 (@1 x@1 :@1 &@1 '@1 a@1 str@1 )@1 -@1 >@1 char@1 {@1 }@1 let@2 s@2 =@2 ;@2";
    assert_eq!(tokens.join(" "), expected);
}
