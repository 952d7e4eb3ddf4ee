//! Resources from YAML files: one file or a folder of them, each holding one or more
//! documents.
//!
//! A file that does not parse refuses the whole load, naming the file, the document, the
//! field path and the line, so the last good snapshot keeps serving. Objects that parse
//! but are wrong are reported by the compile step and rejected alone.

use crate::config::{BffSpec, Meta, PolicySpec, Resource, Resources, RouteSpec, API_VERSION};
use serde::Deserialize;
use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

/// Where an object was read from, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    /// 1-based index of the document in its file.
    pub document: usize,
}

/// Resources read from files, with where each came from.
#[derive(Debug, Default)]
pub struct Loaded {
    pub resources: Resources,
    /// By kind and key.
    pub origins: BTreeMap<(&'static str, crate::config::ObjectKey), Origin>,
    /// A fingerprint of the files' names and contents, to skip reloads that would
    /// change nothing.
    pub digest: u64,
}

/// A document that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub file: PathBuf,
    /// 1-based; `None` for errors about the file as a whole.
    pub document: Option<usize>,
    /// Field path such as `spec.rules[0].matches[0].path.type`, when known.
    pub field: Option<String>,
    /// 1-based line and column, when known.
    pub location: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.location {
            write!(f, ":{line}:{col}")?;
        }
        if let Some(doc) = self.document {
            write!(f, ": document {doc}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file.display(), self.document)
    }
}

/// The shape every document shares.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    api_version: Option<String>,
    kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Document<S> {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: Meta,
    spec: S,
    /// Files exported from a cluster carry a status; it is not configuration.
    #[serde(default)]
    #[allow(dead_code)]
    status: Option<serde::de::IgnoredAny>,
}

/// Files a path stands for: the file itself, or the `.yaml` and `.yml` files under a
/// folder (recursively, hidden entries skipped), sorted by path.
pub fn files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let p = entry.path();
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads every file under `path`. Returns every error found, not just the first.
pub fn load(path: &Path) -> Result<Loaded, Vec<LoadError>> {
    let files = files(path).map_err(|e| {
        vec![LoadError {
            file: path.to_path_buf(),
            document: None,
            field: None,
            location: None,
            message: e.to_string(),
        }]
    })?;
    let mut loaded = Loaded::default();
    let mut errors = Vec::new();
    let mut hasher = std::hash::DefaultHasher::new();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                std::hash::Hash::hash(&(&file, &text), &mut hasher);
                parse_into(&file, &text, &mut loaded, &mut errors);
            }
            Err(e) => errors.push(LoadError {
                file,
                document: None,
                field: None,
                location: None,
                message: e.to_string(),
            }),
        }
    }
    loaded.digest = std::hash::Hasher::finish(&hasher);
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(errors)
    }
}

/// Reads file mode's Secrets: each folder under `dir` is one Secret named after the
/// folder, holding `tls.crt`, `tls.key` and `ca.crt` files as a mounted Secret does
/// (each optional). They go into `loaded` with an empty namespace, and their contents
/// into its digest.
pub fn load_secrets(dir: &Path, loaded: &mut Loaded) -> Result<(), Vec<LoadError>> {
    let error = |file: &Path, message: String| LoadError {
        file: file.to_path_buf(),
        document: None,
        field: None,
        location: None,
        message,
    };
    let entries = std::fs::read_dir(dir)
        .map_err(|e| vec![error(dir, format!("cannot read the secrets folder: {e}"))])?;
    let mut errors = Vec::new();
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&loaded.digest, &mut hasher);
    let mut folders: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    folders.sort();
    for folder in folders {
        let name = folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut read = |key: &str| -> Option<std::sync::Arc<[u8]>> {
            let file = folder.join(key);
            match std::fs::read(&file) {
                Ok(bytes) => {
                    std::hash::Hash::hash(&(&file, &bytes), &mut hasher);
                    Some(bytes.into())
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    errors.push(error(&file, e.to_string()));
                    None
                }
            }
        };
        let mut data = crate::config::SecretData::default();
        for key in crate::config::SecretData::KEYS {
            data.set(key, read(key));
        }
        let key = crate::config::ObjectKey {
            namespace: String::new(),
            name,
        };
        loaded.resources.secrets.insert(key, data);
    }
    loaded.digest = std::hash::Hasher::finish(&hasher);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Parses the documents of one file's text.
pub fn parse_into(file: &Path, text: &str, loaded: &mut Loaded, errors: &mut Vec<LoadError>) {
    let err =
        |document: Option<usize>, field: Option<String>, location, message: String| LoadError {
            file: file.to_path_buf(),
            document,
            field,
            location,
            message,
        };

    // First pass: what kind each document is. The second pass deserializes each one
    // straight from the text, so errors keep their line numbers.
    let mut kinds = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        match serde_norway::Value::deserialize(doc) {
            Ok(serde_norway::Value::Null) => kinds.push(None),
            Ok(value) => kinds.push(Some(
                serde_norway::from_value::<Header>(value).map_err(|e| e.to_string()),
            )),
            Err(e) => {
                errors.push(err(
                    Some(kinds.len() + 1),
                    None,
                    location(&e),
                    e.to_string(),
                ));
                return;
            }
        }
    }

    for (i, (doc, kind)) in serde_norway::Deserializer::from_str(text)
        .zip(kinds)
        .enumerate()
    {
        let n = i + 1;
        let header = match kind {
            None => continue,
            Some(Ok(h)) => h,
            Some(Err(message)) => {
                errors.push(err(
                    Some(n),
                    None,
                    None,
                    format!("not an object: {message}"),
                ));
                continue;
            }
        };
        match header.api_version.as_deref() {
            Some(API_VERSION) => {}
            Some(other) => {
                errors.push(err(
                    Some(n),
                    Some("apiVersion".into()),
                    None,
                    format!("{other:?} is not {API_VERSION:?}"),
                ));
                continue;
            }
            None => {
                errors.push(err(
                    Some(n),
                    Some("apiVersion".into()),
                    None,
                    format!("missing; write {API_VERSION}"),
                ));
                continue;
            }
        }
        let location_of = |file: &Path| Origin {
            file: file.to_path_buf(),
            document: n,
        };
        let result = match header.kind.as_deref() {
            Some("Route") => {
                serde_path_to_error::deserialize::<_, Document<RouteSpec>>(doc).map(|d| {
                    let key = d.metadata.key();
                    let resource = Resource {
                        meta: d.metadata,
                        spec: d.spec,
                    };
                    ("Route", key, Parsed::Route(resource))
                })
            }
            Some("Policy") => {
                serde_path_to_error::deserialize::<_, Document<PolicySpec>>(doc).map(|d| {
                    let key = d.metadata.key();
                    let resource = Resource {
                        meta: d.metadata,
                        spec: d.spec,
                    };
                    ("Policy", key, Parsed::Policy(resource))
                })
            }
            Some("BFF") => serde_path_to_error::deserialize::<_, Document<BffSpec>>(doc).map(|d| {
                let key = d.metadata.key();
                let resource = Resource {
                    meta: d.metadata,
                    spec: d.spec,
                };
                ("BFF", key, Parsed::Bff(resource))
            }),
            Some(other) => {
                errors.push(err(
                    Some(n),
                    Some("kind".into()),
                    None,
                    format!(
                        "{other:?} is not a kind this gateway reads; expected Route, Policy or BFF"
                    ),
                ));
                continue;
            }
            None => {
                errors.push(err(
                    Some(n),
                    Some("kind".into()),
                    None,
                    "missing; write Route, Policy or BFF".into(),
                ));
                continue;
            }
        };
        match result {
            Ok((kind, key, parsed)) => {
                let id = (kind, key);
                if let Some(first) = loaded.origins.get(&id) {
                    errors.push(err(
                        Some(n),
                        Some("metadata.name".into()),
                        None,
                        format!("{kind} {} is defined twice; also in {first}", id.1),
                    ));
                    continue;
                }
                loaded.origins.insert(id, location_of(file));
                match parsed {
                    Parsed::Route(r) => loaded.resources.routes.push(r),
                    Parsed::Policy(p) => loaded.resources.policies.push(p),
                    Parsed::Bff(b) => loaded.resources.bffs.push(b),
                }
            }
            Err(e) => {
                let field = e.path().to_string();
                let inner = e.into_inner();
                errors.push(err(
                    Some(n),
                    Some(field),
                    location(&inner),
                    strip_location(&inner),
                ));
            }
        }
    }
}

/// One document of a kind the gateway reads.
#[allow(clippy::large_enum_variant)] // one per document, moved once
enum Parsed {
    Route(Resource<RouteSpec>),
    Policy(Resource<PolicySpec>),
    Bff(Resource<BffSpec>),
}

fn location(e: &serde_norway::Error) -> Option<(usize, usize)> {
    e.location().map(|l| (l.line(), l.column()))
}

/// The error text without what [`LoadError`] prints itself: the parser's own field
/// path in front and " at line X column Y" behind.
fn strip_location(e: &serde_norway::Error) -> String {
    let mut text = e.to_string();
    if let Some(i) = text.find(" at line ") {
        text.truncate(i);
    }
    match text.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => rest.to_string(),
        _ => text,
    }
}

/// Calls `on_change` (debounced) whenever something under `path` may have changed.
/// Returns the watcher, which must be kept alive.
pub fn watch(
    path: &Path,
    on_change: tokio::sync::mpsc::Sender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let single_file = path
        .is_file()
        .then(|| path.file_name().map(ToOwned::to_owned))
        .flatten();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        if event
            .paths
            .iter()
            .any(|p| relevant(p, single_file.as_deref()))
        {
            let _ = on_change.try_send(());
        }
    })?;
    // Watch the folder that holds a single file too: editors and ConfigMap mounts
    // replace files by renaming, which a watch on the file itself would miss.
    let (target, mode) = if path.is_file() {
        (
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
            RecursiveMode::NonRecursive,
        )
    } else {
        (path, RecursiveMode::Recursive)
    };
    watcher.watch(target, mode)?;
    Ok(watcher)
}

/// Calls `on_change` whenever anything under the folder `dir` changes: certificate
/// files have no extension to filter on, and their rotation must never be missed.
pub fn watch_all(
    dir: &Path,
    on_change: tokio::sync::mpsc::Sender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = on_change.try_send(());
        }
    })?;
    watcher.watch(dir, RecursiveMode::Recursive)?;
    Ok(watcher)
}

/// Whether a change to `changed` may change the configuration: the watched file itself
/// (or, for a folder, any YAML file or subfolder), or the `..data` links by which a
/// Kubernetes ConfigMap mount swaps its files at once. Other files in the folder, such
/// as an editor's backups or a program's output, are ignored.
fn relevant(changed: &Path, single_file: Option<&std::ffi::OsStr>) -> bool {
    let Some(name) = changed.file_name() else {
        return true;
    };
    if name.to_string_lossy().starts_with("..") {
        return true;
    }
    match single_file {
        Some(file) => name == file,
        None => match changed.extension().and_then(|e| e.to_str()) {
            Some(ext) => matches!(ext, "yaml" | "yml"),
            None => !name.to_string_lossy().starts_with('.'),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configuration_changes_are_relevant() {
        let file = Some(std::ffi::OsStr::new("routes.yaml"));
        assert!(relevant(Path::new("/c/routes.yaml"), file));
        assert!(relevant(Path::new("/c/..data"), file));
        assert!(!relevant(Path::new("/c/other.yaml"), file));
        assert!(!relevant(Path::new("/c/wrk.out"), file));
        assert!(relevant(Path::new("/c/sub/a.yml"), None));
        assert!(relevant(Path::new("/c/subfolder"), None));
        assert!(!relevant(Path::new("/c/a.yaml.swp"), None));
        assert!(!relevant(Path::new("/c/.hidden"), None));
    }

    fn parse(text: &str) -> Result<Loaded, Vec<LoadError>> {
        let mut loaded = Loaded::default();
        let mut errors = Vec::new();
        parse_into(Path::new("routes.yaml"), text, &mut loaded, &mut errors);
        if errors.is_empty() {
            Ok(loaded)
        } else {
            Err(errors)
        }
    }

    #[test]
    fn reads_several_documents() {
        let loaded = parse(
            "apiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {name: a}\n\
             spec:\n  rules:\n  - backends: [{address: '127.0.0.1:1'}]\n---\n---\n\
             apiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {name: b, namespace: x}\n\
             spec: {rules: [{backends: [{address: 'b:80'}]}]}\n",
        )
        .unwrap();
        assert_eq!(loaded.resources.routes.len(), 2);
        assert_eq!(loaded.resources.routes[0].meta.namespace, "default");
        assert_eq!(loaded.resources.routes[1].meta.namespace, "x");
        let origin = &loaded.origins[&("Route", loaded.resources.routes[1].meta.key())];
        assert_eq!(origin.document, 3);
    }

    #[test]
    fn errors_name_document_field_and_line() {
        let errors = parse(
            "apiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {name: a}\nspec: {rules: []}\n---\n\
             apiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {name: b}\n\
             spec:\n  rules:\n  - matches:\n    - path: {type: Prefix, value: /x}\n",
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        let e = &errors[0];
        assert_eq!(e.document, Some(2));
        assert_eq!(
            e.field.as_deref(),
            Some("spec.rules[0].matches[0].path.type")
        );
        assert_eq!(e.location.map(|l| l.0), Some(12));
        let text = e.to_string();
        assert!(text.starts_with("routes.yaml:12:"), "{text}");
        assert!(text.contains("unknown variant `Prefix`"), "{text}");
    }

    #[test]
    fn unknown_fields_kinds_and_versions_are_refused() {
        let errors = parse(
            "apiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {name: a}\nspec: {rules: [], hostz: []}\n---\n\
             apiVersion: portcullis.dev/v1alpha1\nkind: Gateway\nmetadata: {name: b}\n---\n\
             apiVersion: v1\nkind: Route\nmetadata: {name: c}\n",
        )
        .unwrap_err();
        let fields: Vec<_> = errors
            .iter()
            .map(|e| (e.document, e.field.clone()))
            .collect();
        assert_eq!(
            fields,
            [
                (Some(1), Some("spec.hostz".to_string())),
                (Some(2), Some("kind".to_string())),
                (Some(3), Some("apiVersion".to_string())),
            ]
        );
    }

    #[test]
    fn duplicate_objects_are_refused() {
        let doc = "apiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {name: a}\nspec: {rules: []}\n";
        let errors = parse(&format!("{doc}---\n{doc}")).unwrap_err();
        assert_eq!(errors[0].document, Some(2));
        assert!(errors[0].message.contains("defined twice"));
    }

    #[test]
    fn syntax_errors_have_lines() {
        let errors = parse("apiVersion: portcullis.dev/v1alpha1\nkind: [Route\n").unwrap_err();
        assert!(errors[0].location.is_some(), "{errors:?}");
    }
}
