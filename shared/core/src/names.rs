//! Names: a person's display name as typed (checked, NFC), the slug it is stored under, and the
//! person a folder name stands for (the drop folder, an imported folder or dataset label).

/// Longest slug kept.
pub const MAX_SLUG: usize = 64;
/// Longest display name accepted.
pub const MAX_NAME: usize = 100;

/// A name that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NameError {
    /// Nothing usable in it.
    #[error("a name needs at least one letter or digit")]
    Empty,
    /// Too long.
    #[error("a name may have at most {MAX_NAME} characters")]
    TooLong,
    /// Control characters.
    #[error("a name may not contain control characters")]
    Control,
    /// Characters that reorder text (bidi overrides, embeddings, isolates, direction marks).
    #[error("a name may not contain characters that change the direction of text")]
    Bidi,
    /// Not a slug.
    #[error("{0:?} is not a valid identity slug ([a-z0-9_], 1-64 characters)")]
    BadSlug(String),
    /// Not an upload id.
    #[error("{0:?} is not a valid upload id")]
    BadUploadId(String),
    /// Not `uploads/<person>/<file>`.
    #[error("{0:?} is not uploads/<person>/<file>")]
    BadUploadKey(String),
}

/// Whether a character changes the direction of the text around it (bidi embeddings,
/// overrides and isolates, and the direction marks): a name could display as something else.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Checks a display name and returns it as it will be stored and shown: in any script,
/// normalised to NFC (so the same name typed on two keyboards is one string), trimmed. Refused:
/// control characters, characters that change the text's direction, more than [`MAX_NAME`]
/// characters, and names without a letter or digit.
pub fn display_name(name: &str) -> Result<String, NameError> {
    use unicode_normalization::UnicodeNormalization;
    let nfc: String = name.nfc().collect();
    let t = nfc.trim();
    if t.chars().count() > MAX_NAME {
        return Err(NameError::TooLong);
    }
    if t.chars().any(char::is_control) {
        return Err(NameError::Control);
    }
    if t.chars().any(is_bidi_control) {
        return Err(NameError::Bidi);
    }
    if !t.chars().any(char::is_alphanumeric) {
        return Err(NameError::Empty);
    }
    Ok(t.to_string())
}

/// A name's slug: [`latin_slug`] when the name is written in Latin letters and digits alone;
/// otherwise the Latin part (if any) and a tag of the whole name (`id_` and 8 hex digits when
/// nothing is Latin), so that names in other scripts get a stable slug of their own instead of
/// folding into one another ("Анна" → `id_…`, "Анна Smith" → `smith_…`).
pub fn slugify(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let name: String = name.nfc().collect();
    let latin = latin_slug(&name);
    let dropped = name
        .chars()
        .flat_map(fold_accent)
        .any(|c| c.is_alphanumeric() && !c.is_ascii_alphanumeric());
    if !dropped {
        return latin;
    }
    let nfc: String = name.trim().nfc().flat_map(char::to_lowercase).collect();
    let tag = &crate::store::content_tag(nfc.as_bytes())[..8];
    if latin.is_empty() {
        format!("id_{tag}")
    } else {
        let mut head = latin;
        head.truncate(MAX_SLUG - 9);
        format!("{}_{tag}", head.trim_end_matches('_'))
    }
}

/// Reduces a name to `[a-z0-9_]`: letters lower-cased with common accents removed, every run of
/// other characters one `_`, no `_` at either end ("Lin-Manuel Miranda" → `lin_manuel_miranda`).
pub fn latin_slug(name: &str) -> String {
    let mut out = String::new();
    let mut gap = false;
    for c in name.chars().flat_map(fold_accent) {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            if gap && !out.is_empty() {
                out.push('_');
            }
            gap = false;
            out.push(c);
        } else {
            gap = true;
        }
        if out.len() >= MAX_SLUG {
            break;
        }
    }
    out.truncate(MAX_SLUG);
    out.trim_end_matches('_').to_string()
}

fn fold_accent(c: char) -> impl Iterator<Item = char> {
    let s: &str = match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' => "a",
        'æ' | 'Æ' => "ae",
        'ç' | 'Ç' => "c",
        'è' | 'é' | 'ê' | 'ë' | 'È' | 'É' | 'Ê' | 'Ë' => "e",
        'ì' | 'í' | 'î' | 'ï' | 'Ì' | 'Í' | 'Î' | 'Ï' => "i",
        'ñ' | 'Ñ' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' | 'Ø' => "o",
        'ù' | 'ú' | 'û' | 'ü' | 'Ù' | 'Ú' | 'Û' | 'Ü' => "u",
        'ý' | 'ÿ' | 'Ý' => "y",
        'ß' => "ss",
        _ => "",
    };
    let single = if s.is_empty() { Some(c) } else { None };
    s.chars().chain(single)
}

/// Checks a slug.
pub fn check_slug(slug: &str) -> Result<(), NameError> {
    if !slug.is_empty()
        && slug.len() <= MAX_SLUG
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        Ok(())
    } else {
        Err(NameError::BadSlug(slug.chars().take(80).collect()))
    }
}

/// The person a folder name stands for (a drop-folder upload `uploads/<folder>/<file>`, an
/// imported folder, a dataset's label): `_` read as a space, each word's first letter in capitals
/// (`lin_manuel_miranda` → "Lin Manuel Miranda", `Aaron_Eckhart` → "Aaron Eckhart"), checked as
/// a display name. Its slug is [`slugify`] of the result.
pub fn person_from_folder(folder: &str) -> Result<String, NameError> {
    let words: Vec<String> = folder
        .split(['_', ' '])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect())
                .unwrap_or_default()
        })
        .collect();
    display_name(&words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_name_people() {
        assert_eq!(
            person_from_folder("lin_manuel_miranda").unwrap(),
            "Lin Manuel Miranda"
        );
        assert_eq!(
            person_from_folder("Aaron_Eckhart").unwrap(),
            "Aaron Eckhart"
        );
        assert_eq!(
            person_from_folder("jean-luc__picard").unwrap(),
            "Jean-luc Picard"
        );
        assert_eq!(
            slugify(&person_from_folder("Ada_LOVELACE").unwrap()),
            "ada_lovelace"
        );
        assert!(person_from_folder("___").is_err());
    }

    #[test]
    fn slugs() {
        assert_eq!(slugify("Lin-Manuel Miranda"), "lin_manuel_miranda");
        assert_eq!(slugify("  Beyoncé Knowles  "), "beyonce_knowles");
        assert_eq!(slugify("../../etc/passwd"), "etc_passwd");
        assert_eq!(
            slugify("<script>alert(1)</script>"),
            "script_alert_1_script"
        );
        assert!(
            slugify("李小龙").starts_with("id_"),
            "{}",
            slugify("李小龙")
        );
        assert_eq!(slugify(&"a".repeat(500)).len(), MAX_SLUG);
        assert_eq!(display_name("  Ada Lovelace ").unwrap(), "Ada Lovelace");
        assert_eq!(display_name("!!!"), Err(NameError::Empty));
        assert_eq!(display_name("a\u{0}b"), Err(NameError::Control));
        assert!(display_name(&"x".repeat(101)).is_err());
    }

    #[test]
    fn names_in_any_script_get_slugs_of_their_own() {
        // Shown as typed, each with a stable slug that does not depend on Latin letters.
        for name in [
            "Анна Каренина",
            "李小龙",
            "محمد صلاح",
            "Αλέξανδρος",
            "Анна Smith",
        ] {
            assert_eq!(display_name(name).unwrap(), name);
            let slug = slugify(name);
            check_slug(&slug).unwrap();
            assert_eq!(slug, slugify(name), "stable");
        }
        let slugs: std::collections::BTreeSet<String> = [
            "Анна",
            "Ольга",
            "李小龙",
            "成龙",
            "محمد",
            "Αλέξανδρος",
            "Νίκος",
        ]
        .iter()
        .map(|n| slugify(n))
        .collect();
        assert_eq!(
            slugs.len(),
            7,
            "different names, different slugs: {slugs:?}"
        );
        assert!(slugify("李小龙").starts_with("id_"));
        assert!(slugify("Анна Smith").starts_with("smith_"));
        // NFC: the same name typed decomposed is the same name.
        assert_eq!(display_name("Ame\u{301}lie").unwrap(), "Am\u{e9}lie");
        assert_eq!(slugify("Ame\u{301}lie"), "amelie");
        // An emoji alone is no name; with letters it is kept as typed.
        assert_eq!(display_name("😀"), Err(NameError::Empty));
        assert_eq!(display_name("Ada 😀").unwrap(), "Ada 😀");
        // Text that changes direction is refused (the name would show as something else).
        assert_eq!(display_name("evil\u{202E}gnp.exe"), Err(NameError::Bidi));
        assert_eq!(display_name("a\u{2067}b"), Err(NameError::Bidi));
        // Two names that fold into one slug: the slug is the same; the enrollment decides
        // (a new person gets the next free slug, see the enrollment use case).
        assert_eq!(slugify("barack-OBAMA!"), slugify("Barack Obama"));
    }

    #[test]
    fn hostile_names_are_refused_with_their_reason() {
        // Line breaks, tabs and bells are control characters, wherever they are.
        for name in [
            "Ada\nLovelace",
            "Ada\tLovelace",
            "Ada\u{7}",
            "\u{1b}[31mAda",
        ] {
            assert_eq!(display_name(name), Err(NameError::Control), "{name:?}");
        }
        // Nothing to read: spaces, a zero-width space, punctuation.
        for name in ["   ", "\u{200B}", "\u{200B}\u{200B} ", "-_-", ""] {
            assert_eq!(display_name(name), Err(NameError::Empty), "{name:?}");
        }
        // Marks that change the direction of the text around them.
        for name in ["Ada\u{200F}", "\u{061C}Ada", "Ada\u{2066}x\u{2069}"] {
            assert_eq!(display_name(name), Err(NameError::Bidi), "{name:?}");
        }
        // Length counts characters after NFC: 100 are fine, a letter under 200 stacked accents
        // is not.
        assert_eq!(display_name(&"é".repeat(100)).unwrap().chars().count(), 100);
        assert_eq!(display_name(&"x".repeat(300)), Err(NameError::TooLong));
        let stacked = format!("Z{}", "\u{301}\u{316}".repeat(100));
        assert_eq!(display_name(&stacked), Err(NameError::TooLong));
    }

    #[test]
    fn look_alike_and_full_width_names_do_not_take_someone_elses_slug() {
        // A Cyrillic "А" in front of "da" is not "Ada".
        let homoglyph = slugify("\u{410}da");
        assert_ne!(homoglyph, slugify("Ada"));
        check_slug(&homoglyph).unwrap();
        // Full-width Latin letters are kept as typed, with a slug of their own.
        let wide = "\u{FF21}\u{FF44}\u{FF41}";
        assert_eq!(display_name(wide).unwrap(), wide);
        let slug = slugify(wide);
        assert!(slug.starts_with("id_"), "{slug}");
        assert_ne!(slug, slugify("Ada"));
    }

    #[test]
    fn slugs_are_checked() {
        for bad in [
            "",
            "Ada",
            "ada-lovelace",
            "ada lovelace",
            "../ada",
            "ada/x",
            "ad\u{e9}",
            &"a".repeat(MAX_SLUG + 1),
        ] {
            assert!(
                matches!(check_slug(bad), Err(NameError::BadSlug(_))),
                "{bad:?} accepted"
            );
        }
        check_slug(&"a".repeat(MAX_SLUG)).unwrap();
        check_slug("lin_manuel_miranda_2").unwrap();
    }
}
