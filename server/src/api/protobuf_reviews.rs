//! The protobuf messages of the review kinds (`authorization.k8s.io/v1` access and rules
//! reviews, `authentication.k8s.io/v1` SelfSubjectReview), which are not in the
//! generated table because they are never stored. kubectl sends them as protobuf.
//! Written by hand from upstream's `generated.proto`; only the spec is decoded (a
//! review's status is the server's to fill), and `extra` is left out.

use super::{Card::Repeated as R, Card::Single as S, Field as F, Message as M, Type as T};

const fn string(tag: u32, json: &'static str) -> F {
    F {
        tag,
        json,
        card: S,
        ty: T::String,
        keep_zero: false,
    }
}

const fn message(tag: u32, json: &'static str, m: &'static M) -> F {
    F {
        tag,
        json,
        card: S,
        ty: T::Message(m),
        keep_zero: false,
    }
}

/// The review kinds: apiVersion, kind, message.
pub(super) static KINDS: &[(&str, &str, &M)] = &[
    (
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
        &SELF_SUBJECT_ACCESS_REVIEW,
    ),
    (
        "authorization.k8s.io/v1",
        "SubjectAccessReview",
        &SUBJECT_ACCESS_REVIEW,
    ),
    (
        "authorization.k8s.io/v1",
        "LocalSubjectAccessReview",
        &SUBJECT_ACCESS_REVIEW,
    ),
    (
        "authorization.k8s.io/v1",
        "SelfSubjectRulesReview",
        &SELF_SUBJECT_RULES_REVIEW,
    ),
    (
        "authentication.k8s.io/v1",
        "SelfSubjectReview",
        &SELF_SUBJECT_REVIEW,
    ),
];

static META: M = M {
    name: "apimachinery.pkg.apis.meta.v1.ObjectMeta",
    fields: &[
        string(1, "name"),
        string(2, "generateName"),
        string(3, "namespace"),
    ],
};

static RESOURCE_ATTRIBUTES: M = M {
    name: "api.authorization.v1.ResourceAttributes",
    fields: &[
        string(1, "namespace"),
        string(2, "verb"),
        string(3, "group"),
        string(4, "version"),
        string(5, "resource"),
        string(6, "subresource"),
        string(7, "name"),
    ],
};

static NON_RESOURCE_ATTRIBUTES: M = M {
    name: "api.authorization.v1.NonResourceAttributes",
    fields: &[string(1, "path"), string(2, "verb")],
};

static SELF_SUBJECT_ACCESS_REVIEW_SPEC: M = M {
    name: "api.authorization.v1.SelfSubjectAccessReviewSpec",
    fields: &[
        message(1, "resourceAttributes", &RESOURCE_ATTRIBUTES),
        message(2, "nonResourceAttributes", &NON_RESOURCE_ATTRIBUTES),
    ],
};

static SELF_SUBJECT_ACCESS_REVIEW: M = M {
    name: "api.authorization.v1.SelfSubjectAccessReview",
    fields: &[
        message(1, "metadata", &META),
        message(2, "spec", &SELF_SUBJECT_ACCESS_REVIEW_SPEC),
    ],
};

static SUBJECT_ACCESS_REVIEW_SPEC: M = M {
    name: "api.authorization.v1.SubjectAccessReviewSpec",
    fields: &[
        message(1, "resourceAttributes", &RESOURCE_ATTRIBUTES),
        message(2, "nonResourceAttributes", &NON_RESOURCE_ATTRIBUTES),
        string(3, "user"),
        F {
            tag: 4,
            json: "groups",
            card: R,
            ty: T::String,
            keep_zero: false,
        },
        string(6, "uid"),
    ],
};

static SUBJECT_ACCESS_REVIEW: M = M {
    name: "api.authorization.v1.SubjectAccessReview",
    fields: &[
        message(1, "metadata", &META),
        message(2, "spec", &SUBJECT_ACCESS_REVIEW_SPEC),
    ],
};

static SELF_SUBJECT_RULES_REVIEW_SPEC: M = M {
    name: "api.authorization.v1.SelfSubjectRulesReviewSpec",
    fields: &[string(1, "namespace")],
};

static SELF_SUBJECT_RULES_REVIEW: M = M {
    name: "api.authorization.v1.SelfSubjectRulesReview",
    fields: &[
        message(1, "metadata", &META),
        message(2, "spec", &SELF_SUBJECT_RULES_REVIEW_SPEC),
    ],
};

static SELF_SUBJECT_REVIEW: M = M {
    name: "api.authentication.v1.SelfSubjectReview",
    fields: &[message(1, "metadata", &META)],
};
