//! Stage 3 of a reconcile, pure: the whole set of objects a hub or relayer owns ([`Resources`]),
//! built from a [`Validated`] spec. No I/O: each builder takes a [`NodeBuild`] and returns an
//! object ready for server-side apply.

pub mod certificate;
pub mod configmap;
pub mod pdb;
pub mod service;
pub mod serviceaccount;
pub mod statefulset;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::ApiResource;

use crate::crd::NodeSpec;
use crate::kind::{NodeKind, Target};
use crate::nodeconfig::{self, ConfigInput, Mode, RenderedConfig};
use crate::objectstore::StoreExtras;
use crate::validate::Validated;
use crate::Error;

pub const FIELD_MANAGER: &str = "unisondb-operator";
pub const CONFIG_HASH_ANNOTATION: &str = "unisondb.io/config-hash";
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// Node image of this operator's version, for specs without `image`.
pub const DEFAULT_NODE_IMAGE: &str =
    concat!("ghcr.io/unisondb/unisondb:", env!("CARGO_PKG_VERSION"));

/// Which kind of node an object belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Hub,
    Relayer,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Hub => "hub",
            Component::Relayer => "relayer",
        }
    }
    pub fn mode(self) -> Mode {
        match self {
            Component::Hub => Mode::Replicator,
            Component::Relayer => Mode::Relayer,
        }
    }
}

/// Everything the builders need, extracted once from the custom resource.
#[derive(Clone, Debug)]
pub struct NodeBuild<'a> {
    pub name: String,
    pub namespace: String,
    pub component: Component,
    pub replicas: i32,
    /// A hub of more than one member: a Raft group (leader-routed client Service, read Service,
    /// pods started in parallel, operator-driven rolling updates).
    pub group: bool,
    pub owner: OwnerReference,
    pub spec: &'a NodeSpec,
    pub config: &'a RenderedConfig,
    /// `spec.image`, or the operator's default node image.
    pub image: String,
    /// Size in the volume claim template (an existing StatefulSet's cannot change).
    pub storage_size: String,
    /// The TLS Secret the pods mount (`spec.tls`'s, or cert-manager's `<name>-tls`), if any.
    pub tls_secret: Option<String>,
    /// Object storage: Secret mounts and recovery init containers.
    pub stores: StoreExtras,
}

impl<'a> NodeBuild<'a> {
    /// Builder input straight from an object (tests and tools); `None` without namespace or uid.
    pub fn of<K: NodeKind>(obj: &'a K, config: &'a RenderedConfig) -> Option<Self> {
        let target = Target::of(obj).ok()?;
        let mut b = Self::new(
            target,
            K::COMPONENT,
            obj.replicas(),
            obj.node(),
            config,
            image_of(obj.node(), DEFAULT_NODE_IMAGE),
            obj.node().storage.size.clone(),
        );
        b.stores = obj.stores().unwrap_or_default();
        Some(b)
    }

    fn new(
        target: Target,
        component: Component,
        replicas: i32,
        spec: &'a NodeSpec,
        config: &'a RenderedConfig,
        image: String,
        storage_size: String,
    ) -> Self {
        let tls_secret = spec.tls.as_ref().and_then(|t| t.secret_for(&target.name));
        NodeBuild {
            tls_secret,
            storage_size,
            image,
            name: target.name,
            namespace: target.namespace,
            component,
            replicas,
            group: component == Component::Hub && replicas > 1,
            owner: target.owner,
            spec,
            config,
            stores: StoreExtras::default(),
        }
    }

    /// Metadata for an owned object: name, namespace, labels, controller owner reference.
    pub fn meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels(&self.name, self.component)),
            owner_references: Some(vec![self.owner.clone()]),
            ..Default::default()
        }
    }
}

/// What to do about the PodDisruptionBudget (wanted only with more than one replica).
#[derive(Clone, Debug)]
pub enum PdbPlan {
    /// Apply `object` through `api` (`policy/v1` or `policy/v1beta1`).
    Apply {
        api: ApiResource,
        name: String,
        object: serde_json::Value,
    },
    /// Remove a PDB left from when the node had more replicas (absent is fine); only one this
    /// node owns (`owner_uid` in its owner references): a user's PDB of the same name stays.
    Delete {
        api: ApiResource,
        name: String,
        owner_uid: String,
    },
    /// Wanted, but the server serves no PDB API: reported, not fatal.
    Unsupported,
    /// Not wanted, and no PDB API to clean up through.
    Nothing,
}

/// The whole desired state of one node, applied in field order (StatefulSet last).
#[derive(Clone, Debug)]
pub struct Resources {
    pub config_map: ConfigMap,
    pub service_account: ServiceAccount,
    pub headless_service: Service,
    pub client_service: Service,
    /// Hub groups: the read Service over every member, then the followers' Service.
    pub group_services: Vec<Service>,
    pub pdb: PdbPlan,
    pub stateful_set: StatefulSet,
    /// The cert-manager Certificate (`spec.tls.certManager`), applied before the StatefulSet.
    pub certificate: Option<serde_json::Value>,
    /// Hash of the rendered node config (also stamped on the pod template).
    pub config_hash: String,
    /// Grow the node's volumes (PVCs) to a size (`storage.size` above the template's).
    pub grow_volumes: Option<VolumeGrowth>,
}

/// Which PVCs to grow, and to what size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeGrowth {
    /// Label selector of the node's PVCs (the claim template carries the pod selector labels).
    pub selector: String,
    pub size: String,
}

/// Renders the node config and builds every owned object. `pdb_api` is the PDB API the server
/// serves (read by `dereference`); `default_image` is used when the spec names no image.
pub fn build(
    v: &Validated<'_>,
    pdb_api: Option<&ApiResource>,
    default_image: &str,
) -> Result<Resources, Error> {
    let config = nodeconfig::render(&ConfigInput {
        mode: v.component.mode(),
        namespaces: v.wiring.namespaces.clone(),
        spec: v.spec,
        upstream: v.wiring.upstream.clone(),
        mirrors: v.wiring.mirrors.clone(),
        archive: v.stores.archive.clone(),
        object_store: v.stores.object_store.clone(),
        peers: (v.component == Component::Hub && v.replicas > 1).then(|| {
            names::peers(
                &v.target.name,
                &v.target.namespace,
                &v.cluster_domain,
                v.replicas,
            )
        }),
    })?;
    let mut b = NodeBuild::new(
        v.target.clone(),
        v.component,
        v.replicas,
        v.spec,
        &config,
        image_of(v.spec, default_image),
        v.storage.template_size.clone(),
    );
    b.stores = v.stores.clone();
    let pdb = match pdb_api {
        Some(api) => match pdb::build(&b, &api.api_version) {
            Some(object) => PdbPlan::Apply {
                api: api.clone(),
                name: names::pdb(&b.name),
                object,
            },
            None => PdbPlan::Delete {
                api: api.clone(),
                name: names::pdb(&b.name),
                owner_uid: b.owner.uid.clone(),
            },
        },
        None if pdb::wanted(&b) => PdbPlan::Unsupported,
        None => PdbPlan::Nothing,
    };
    Ok(Resources {
        config_map: configmap::build(&b),
        service_account: serviceaccount::build(&b),
        headless_service: service::headless(&b),
        client_service: service::client(&b),
        group_services: service::group(&b),
        pdb,
        stateful_set: statefulset::build(&b),
        certificate: certificate::build(&b, &v.cluster_domain),
        config_hash: config.hash.clone(),
        grow_volumes: v.storage.grow_to.clone().map(|size| VolumeGrowth {
            selector: selector_string(&b.name, b.component),
            size,
        }),
    })
}

/// `spec.image`, or the operator's default node image when the spec names none.
fn image_of(spec: &NodeSpec, default_image: &str) -> String {
    spec.image
        .clone()
        .unwrap_or_else(|| default_image.to_string())
}

/// The StatefulSet for a spec the operator rejected, when one already runs: what is valid in the
/// spec still applies (image, resources, pod settings, scheduling, replicas) so an upgrade does not
/// stop silently behind an unrelated problem, while what the problem touches stays as it runs — the
/// node config (the existing config hash; the ConfigMap is not applied), the volume claim template
/// the TLS Secret mounted now and, if the spec's image is empty, the image. `None` when the existing StatefulSet carries no
/// config hash (nothing to keep), so nothing is applied.
pub fn fallback_statefulset<K: NodeKind>(
    obj: &K,
    existing: &StatefulSet,
    default_image: &str,
) -> Option<StatefulSet> {
    use statefulset::read;
    let size = read::claim_size(existing)?.to_string();
    let image = match obj.node().image.as_deref() {
        Some(i) if i.trim().is_empty() => read::image(existing)?.to_string(),
        Some(i) => i.to_string(),
        None => default_image.to_string(),
    };
    let config = RenderedConfig {
        yaml: String::new(),
        hash: read::config_hash(existing)?.to_string(),
    };
    let target = Target::of(obj).ok()?;
    // A hub keeps the member count it runs with: the problem may be the count itself (1 <-> 3),
    // and shrinking a group here would drop members without removing them from Raft first.
    let replicas = match K::COMPONENT {
        Component::Hub => read::replicas(existing),
        Component::Relayer => obj.replicas(),
    };
    let mut b = NodeBuild::new(
        target,
        K::COMPONENT,
        replicas,
        obj.node(),
        &config,
        image,
        size,
    );
    // The TLS Secret stays the one mounted now: the problem may be the TLS spec itself (or
    // cert-manager missing), and a Secret nobody fills would keep the pods from starting.
    b.tls_secret = read::tls_secret(existing).map(str::to_string);
    // The store mounts follow the spec when it is valid there (the running config may point at
    // them); an invalid store spec mounts none.
    b.stores = obj.stores().unwrap_or_default();
    Some(statefulset::build(&b))
}

/// Recommended `app.kubernetes.io/*` labels.
pub fn labels(instance: &str, component: Component) -> BTreeMap<String, String> {
    let mut l = selector_labels(instance, component);
    l.insert(
        "app.kubernetes.io/managed-by".into(),
        "unisondb-operator".into(),
    );
    l.insert("app.kubernetes.io/part-of".into(), "unisondb".into());
    l
}

/// The stable subset of [`labels`] used in selectors (immutable on a StatefulSet).
pub fn selector_labels(instance: &str, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "unisondb".to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            instance.to_string(),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            component.as_str().to_string(),
        ),
    ])
}

/// `k=v,k=v` form of the selector, for `.status.selector`.
pub fn selector_string(instance: &str, component: Component) -> String {
    selector_labels(instance, component)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Object names, in one place so the topology resolver and the builders agree.
pub mod names {
    pub fn statefulset(instance: &str) -> String {
        instance.to_string()
    }
    pub fn client_service(instance: &str) -> String {
        instance.to_string()
    }
    pub fn headless_service(instance: &str) -> String {
        format!("{instance}-headless")
    }
    /// Hub groups: every member (reads, relayers).
    pub fn read_service(instance: &str) -> String {
        format!("{instance}-ro")
    }
    /// Hub groups: the members that do not lead (relayers prefer them, keeping load off the leader).
    pub fn followers_service(instance: &str) -> String {
        format!("{instance}-followers")
    }
    /// Pod `ordinal`'s stable DNS name behind the headless Service.
    pub fn pod_host(instance: &str, namespace: &str, cluster_domain: &str, ordinal: i32) -> String {
        format!(
            "{}-{ordinal}.{}.{namespace}.svc.{cluster_domain}",
            statefulset(instance),
            headless_service(instance)
        )
    }
    /// A hub group's `cluster.peers`: member `i` (id `i + 1`) is pod `i`, at its gRPC port.
    pub fn peers(
        instance: &str,
        namespace: &str,
        cluster_domain: &str,
        replicas: i32,
    ) -> Vec<String> {
        (0..replicas)
            .map(|i| {
                format!(
                    "{}:{}",
                    pod_host(instance, namespace, cluster_domain, i),
                    crate::nodeconfig::GRPC_PORT
                )
            })
            .collect()
    }
    pub fn configmap(instance: &str) -> String {
        format!("{instance}-config")
    }
    pub fn pdb(instance: &str) -> String {
        instance.to_string()
    }
    /// The cert-manager Certificate (`spec.tls.certManager`).
    pub fn certificate(instance: &str) -> String {
        instance.to_string()
    }
    /// The Secret cert-manager fills for [`certificate`].
    pub fn tls_secret(instance: &str) -> String {
        format!("{instance}-tls")
    }
    /// The pods' own ServiceAccount (no token mounted: nodes never call the API server).
    pub fn service_account(instance: &str) -> String {
        instance.to_string()
    }
    /// A hub group's gRPC URL for `status.grpcEndpoint`: the read Service (any member serves the
    /// committed WAL). Relayers get [`group_upstream`].
    pub fn group_grpc_endpoint(
        instance: &str,
        namespace: &str,
        cluster_domain: &str,
        tls: bool,
    ) -> String {
        grpc_url(&read_service(instance), namespace, cluster_domain, tls)
    }
    /// What relayers and mirrors of a hub group follow: the followers' Service first, then the read
    /// Service. The node probes both before each session and prefers a member that answers as a
    /// Raft follower (keeping streaming load off the leader); with no follower ready (a group
    /// forming, or only the leader up) the read Service still reaches a member. Neither name
    /// changes when the group scales, so scaling never restarts relayers.
    pub fn group_upstream(
        instance: &str,
        namespace: &str,
        cluster_domain: &str,
        tls: bool,
    ) -> String {
        format!(
            "{},{}",
            grpc_url(&followers_service(instance), namespace, cluster_domain, tls),
            grpc_url(&read_service(instance), namespace, cluster_domain, tls)
        )
    }
    /// The gRPC URL downstream nodes replicate from: the client Service's DNS name.
    pub fn grpc_endpoint(
        instance: &str,
        namespace: &str,
        cluster_domain: &str,
        tls: bool,
    ) -> String {
        grpc_url(&client_service(instance), namespace, cluster_domain, tls)
    }
    /// The gRPC URL of Service `service` in `namespace`.
    fn grpc_url(service: &str, namespace: &str, cluster_domain: &str, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!(
            "{scheme}://{service}.{namespace}.svc.{cluster_domain}:{}",
            crate::nodeconfig::GRPC_PORT
        )
    }
}
