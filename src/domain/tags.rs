//! Tag rules shared by every taggable aggregate (`TagResource`, `UntagResource`): tags given for
//! an existing key overwrite its value, keys are unique per resource, and a resource holds at most
//! [`MAX_TAGS_PER_RESOURCE`] tags.

use super::types::{QuotaReason, Tag};
use super::Rejection;

/// The AWS-wide limit of user tags on one resource ("Tagging AWS resources": 50 user-created
/// tags per resource); the model allows up to 200 in one request, the resource still holds 50.
pub const MAX_TAGS_PER_RESOURCE: usize = 50;

/// `current` with `added` put in: a key already present takes the new value, in place; new keys
/// are appended in request order. A later duplicate in `added` wins, as a later write would.
pub fn tagged(current: &[Tag], added: &[Tag], resource: &str) -> Result<Vec<Tag>, Rejection> {
    let mut tags = current.to_vec();
    for t in added {
        match tags.iter_mut().find(|have| have.key == t.key) {
            Some(have) => have.value = t.value.clone(),
            None => tags.push(t.clone()),
        }
    }
    if tags.len() > MAX_TAGS_PER_RESOURCE {
        return Err(Rejection::QuotaExceeded {
            reason: QuotaReason::TagsPerResource,
            message: format!(
                "{resource} would hold {} tags; a resource holds at most {MAX_TAGS_PER_RESOURCE}",
                tags.len()
            ),
        });
    }
    Ok(tags)
}

/// Whether two requests ask for the same tags: as a resource would hold them (a later
/// duplicate key wins), in any order. For matching a retry with the request it repeats.
pub fn same_tags(a: &[Tag], b: &[Tag]) -> bool {
    let held = |given: &[Tag]| {
        let mut held: Vec<(String, String)> = tagged(&[], given, "")
            .unwrap_or_else(|_| given.to_vec())
            .into_iter()
            .map(|t| (t.key, t.value))
            .collect();
        held.sort();
        held
    };
    held(a) == held(b)
}

/// `current` without the tags whose keys are in `keys` (keys it does not hold are ignored, as
/// AWS's UntagResource does).
pub fn untagged(current: &[Tag], keys: &[String]) -> Vec<Tag> {
    current.iter().filter(|t| !keys.contains(&t.key)).cloned().collect()
}

/// A change of a resource's tags, as `TagResource` (`Put`) and `UntagResource` (`Remove`) ask it.
#[derive(Debug, Clone, Copy)]
pub enum TagEdit<'a> {
    Put(&'a [Tag]),
    Remove(&'a [String]),
}

/// The event (made by `changed` from the tags after `edit`) that records a change of the
/// resource's tags; none when they stay as they are.
pub fn edited<E>(current: &[Tag], edit: TagEdit<'_>, resource: &str, changed: impl FnOnce(Vec<Tag>) -> E) -> Result<Vec<E>, Rejection> {
    let after = match edit {
        TagEdit::Put(added) => tagged(current, added, resource)?,
        TagEdit::Remove(keys) => untagged(current, keys),
    };
    Ok((after != current).then(|| changed(after)).into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(k: &str, v: &str) -> Tag {
        Tag {
            key: k.into(),
            value: v.into(),
        }
    }

    /// A retry asks for the same tags as its request when the resource would hold the same: in
    /// any order, a later duplicate winning.
    #[test]
    fn the_same_tags_are_the_ones_a_resource_would_hold() {
        assert!(same_tags(&[tag("a", "1"), tag("b", "2")], &[tag("b", "2"), tag("a", "1")]));
        assert!(same_tags(&[tag("env", "dev"), tag("env", "prod")], &[tag("env", "prod")]));
        assert!(!same_tags(&[tag("env", "prod"), tag("env", "dev")], &[tag("env", "prod")]));
        assert!(!same_tags(&[tag("a", "1")], &[]));
    }

    /// TagResource: "When you specify an existing tag key, the value is overwritten with the new
    /// value."
    #[test]
    fn an_existing_key_is_overwritten_in_place() {
        let t = tagged(&[tag("team", "a"), tag("env", "dev")], &[tag("env", "prod"), tag("cost", "1")], "r").expect("tagged");
        assert_eq!(t, [tag("team", "a"), tag("env", "prod"), tag("cost", "1")]);
    }

    /// "Tag keys must be unique per resource", and a resource holds at most 50.
    #[test]
    fn keys_stay_unique_and_the_limit_holds() {
        let fifty: Vec<Tag> = (0..50).map(|i| tag(&format!("k{i}"), "v")).collect();
        let t = tagged(&[], &fifty, "r").expect("fifty fit");
        assert_eq!(tagged(&t, &[tag("k3", "new")], "r").expect("overwrite at the limit").len(), 50);
        let refused = tagged(&t, &[tag("k50", "v")], "r").expect_err("the 51st");
        assert!(matches!(
            refused,
            Rejection::QuotaExceeded {
                reason: QuotaReason::TagsPerResource,
                ..
            }
        ));
    }

    /// UntagResource removes the named keys; unknown keys are no error.
    #[test]
    fn untagging_removes_only_the_named_keys() {
        let t = untagged(&[tag("a", "1"), tag("b", "2")], &["b".into(), "zzz".into()]);
        assert_eq!(t, [tag("a", "1")]);
    }
}
