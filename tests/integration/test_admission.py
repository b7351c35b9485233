"""The generated ValidatingAdmissionPolicy (bgpd/admission.py) against a real kube-apiserver.

The policy rendered for a config with a pool restricted to namespace team-a, one admitting
namespaces labelled tenant=b and one shared by every namespace is applied; then a TENANT (a
ServiceAccount of team-a bound to the built-in `edit` ClusterRole in team-a only, talking
with its own token) writes Services and Pods: what the agent would reject is refused at
write time with a message naming the bad value, the rest is accepted. Deleting the binding
lets the same bad object through, so it is the policy that refuses.
"""

from __future__ import annotations

import http.client
import json
import re
import ssl
import urllib.parse

import pytest
import yaml

from bgpd.admission import POD_POLICY, SERVICE_POLICY, render_policy
from bgpd.config import parse_config
from bgpd.model import Attributes
from bgpd.policy.attributes import BGP_MAX_MESSAGE, encoded_size
from tests.controlplane.controlplane import DEFAULT_CONTROLLERS, ControlPlane
from tests.integration.kube_fixtures import eventually, start_control_plane
from tests.unit.test_admission import SHIPPED

pytestmark = pytest.mark.integration

CONFIG = """
bgp: {asn: 64512}
pools:
  - name: team-a
    cidrs: [198.51.100.0/26, "2001:db8:a::/64"]
    allow: [external-ip, pod-external-ip]
    namespaces: [team-a]
  - name: tenant-b
    cidrs: [198.51.100.64/26]
    allow: [external-ip, pod-external-ip]
    namespace_selector: {tenant: b}
  - name: shared
    cidrs: [198.51.100.128/26]
    allow: [external-ip, pod-external-ip]
  - name: load-balancer
    cidrs: [203.0.113.0/24]
    allow: [load-balancer-ip]
limits: {max_communities: 32}
"""

TEAM_A, TEAM_B = "team-a", "team-b"
TENANT = "tenant"
A_IP, A_IP2, A_IP6 = "198.51.100.10", "198.51.100.11", "2001:db8:a::10"
B_IP = "198.51.100.70"
SHARED_IP, SHARED_IP2 = "198.51.100.130", "198.51.100.131"
LB_IP = "203.0.113.10"
OUTSIDE_IP = "192.0.2.10"

ADMISSION = "/apis/admissionregistration.k8s.io/v1"
PLURALS = {"ValidatingAdmissionPolicy": "validatingadmissionpolicies",
           "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings"}
MERGE = "application/merge-patch+json"
ACTIVE_TIMEOUT_S = 60.0
"""A new policy or binding reaches the admission plugin asynchronously (its informer, then
compilation): normally within a second or two."""


# ------------------------------------------------------------------ helpers


class Tenant:
    """Requests with a ServiceAccount's bearer token, not the admin certificate."""

    def __init__(self, cp: ControlPlane, token: str) -> None:
        assert cp.certs is not None
        self.port, self.token = cp.port, token
        self.ctx = ssl.create_default_context(cafile=str(cp.certs.ca_crt))

    def request(self, method: str, path: str, body: object = None,
                content_type: str = "application/json") -> tuple[int, dict]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx,
                                           timeout=30)
        try:
            headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = content_type
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = {"message": raw.decode(errors="replace")}
        return resp.status, answer if isinstance(answer, dict) else {"message": str(answer)}


def service(name: str, external_ips: list[str] | None = None,
            annotations: dict | None = None) -> dict:
    spec: dict = {"ports": [{"port": 8080, "protocol": "TCP"}]}
    if external_ips:
        spec["externalIPs"] = external_ips
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "annotations": annotations or {}}, "spec": spec}


def pod(name: str, annotations: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": annotations or {}},
            "spec": {"containers": [{"name": "c", "image": "example.invalid/echo:1"}],
                     "terminationGracePeriodSeconds": 0}}


def services(ns: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/services" + (f"/{urllib.parse.quote(name)}" if name else "")


def pods(ns: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/pods" + (f"/{urllib.parse.quote(name)}" if name else "")


def accepted(answer: tuple[int, dict]) -> dict:
    status, body = answer
    assert 200 <= status < 300, f"refused: HTTP {status}: {body.get('message')}"
    return body


def refused(answer: tuple[int, dict], policy: str, *parts: str) -> str:
    """Refused by ``policy`` (not by the API server's own validation), the message holding
    every one of ``parts``; returns the message."""
    status, body = answer
    message = body.get("message", "")
    assert status == 422, f"not refused as invalid: HTTP {status}: {message}"
    assert f"ValidatingAdmissionPolicy '{policy}'" in message, message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


def apply_objects(cp: ControlPlane, objects: list[dict]) -> None:
    for obj in objects:
        status, answer = cp.request("POST", f"{ADMISSION}/{PLURALS[obj['kind']]}", obj)
        assert status in (201, 409), f"{obj['kind']} {obj['metadata']['name']}: {answer}"


def replace_objects(cp: ControlPlane, objects: list[dict]) -> None:
    for obj in objects:
        path = f"{ADMISSION}/{PLURALS[obj['kind']]}/{obj['metadata']['name']}"
        current = cp.api("GET", path)
        body = {**obj, "metadata": {**obj["metadata"],
                                    "resourceVersion": current["metadata"]["resourceVersion"]}}
        cp.api("PUT", path, body)


def wait_active(cp: ControlPlane) -> None:
    """Until both policies refuse a known-bad object (type checking and compilation take a
    moment after the objects are created)."""

    def refuses(path: str, body: dict, policy: str) -> bool:
        status, answer = cp.request("POST", path, body)
        if 200 <= status < 300:  # not active yet: take the object away again
            cp.request("DELETE", f"{path}/{body['metadata']['name']}")
            return False
        return status == 422 and policy in str(answer.get("message"))

    eventually(lambda: refuses(services("default"), service("probe", [OUTSIDE_IP]),
                               SERVICE_POLICY), "the Service policy refusing", ACTIVE_TIMEOUT_S)
    eventually(lambda: refuses(pods("default"), pod("probe", {"bgpd.dev/colour": "blue"}),
                               POD_POLICY), "the Pod policy refusing", ACTIVE_TIMEOUT_S)


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def cp():
    # The status controller writes each policy's type-checking result (checked below).
    plane = start_control_plane(
        controllers=(*DEFAULT_CONTROLLERS, "validatingadmissionpolicy-status-controller"))
    try:
        yield plane
    finally:
        plane.close()


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return render_policy(parse_config(yaml.safe_load(CONFIG)))


@pytest.fixture(scope="module")
def tenant(cp, objects) -> Tenant:
    cp.api("POST", "/api/v1/namespaces", {"metadata": {"name": TEAM_A}})
    cp.api("POST", "/api/v1/namespaces", {"metadata": {"name": TEAM_B,
                                                       "labels": {"tenant": "b"}}})
    cp.api("POST", f"/api/v1/namespaces/{TEAM_A}/serviceaccounts", {"metadata": {"name": TENANT}})
    cp.api("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{TEAM_A}/rolebindings", {
        "metadata": {"name": "tenant-edit"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "edit"},
        "subjects": [{"kind": "ServiceAccount", "name": TENANT, "namespace": TEAM_A}]})
    user = f"system:serviceaccount:{TEAM_A}:{TENANT}"

    def may(verb: str, resource: str, namespace: str) -> bool:
        review = cp.api("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", {
            "spec": {"user": user, "resourceAttributes": {
                "namespace": namespace, "verb": verb, "resource": resource}}})
        return review["status"].get("allowed", False)

    # `edit` gets its rules from the aggregation controller shortly after start; pods need
    # the namespace's `default` ServiceAccount (serviceaccount-controller).
    eventually(lambda: all(may(v, r, TEAM_A) for v in ("create", "patch", "update")
                           for r in ("services", "pods")), "the tenant's edit rights")
    eventually(lambda: cp.get_or_none(f"/api/v1/namespaces/{TEAM_A}/serviceaccounts/default"),
               "team-a's default ServiceAccount")
    assert not may("create", "services", TEAM_B), "the tenant must be confined to team-a"
    apply_objects(cp, objects)
    wait_active(cp)
    return Tenant(cp, cp.mint_token(TEAM_A, TENANT))


# ------------------------------------------------------------------ tests


def test_the_api_server_has_what_the_policy_needs(cp, objects, tenant):
    """ValidatingAdmissionPolicy (GA in 1.30, on by default) and the CEL IP/CIDR library
    (1.31); both policies type-check against the Service and Pod schemas."""
    version = cp.api("GET", "/version")
    assert (int(version["major"]), int(re.match(r"\d+", version["minor"]).group())) >= (1, 31)
    served = {r["name"] for r in cp.api("GET", ADMISSION)["resources"]}
    assert {"validatingadmissionpolicies", "validatingadmissionpolicybindings"} <= served

    def type_checked(name: str) -> dict | None:
        status = cp.api("GET", f"{ADMISSION}/validatingadmissionpolicies/{name}").get("status")
        return status if status and "typeChecking" in status else None

    for obj in objects:
        if obj["kind"] == "ValidatingAdmissionPolicy":
            status = eventually(lambda n=obj["metadata"]["name"]: type_checked(n),
                                f"type checking of {obj['metadata']['name']}")
            assert not status["typeChecking"].get("expressionWarnings"), status
    # The shipped file (rendered from daemonset/base/bgpd.yaml) compiles on this server too.
    for obj in yaml.safe_load_all(SHIPPED.read_text()):
        if obj and obj["kind"] == "ValidatingAdmissionPolicy":
            obj["metadata"]["name"] += "-shipped"  # beside the test's own, never stored
            cp.api("POST", f"{ADMISSION}/{PLURALS[obj['kind']]}?dryRun=All", obj)


def test_tenant_external_ips_follow_the_pools(tenant):
    accepted(tenant.request("POST", services(TEAM_A), service("mine", [A_IP])))
    # The test cluster is IPv4 only: kube-proxy would not forward an IPv6 external IP.
    refused(tenant.request("POST", services(TEAM_A), service("six", [A_IP6])), SERVICE_POLICY,
            f"{A_IP6}: the Service has no IPv6 ClusterIP, so kube-proxy does not forward "
            f"its IPv6 addresses")
    headless = service("headless", [A_IP6])
    headless["spec"]["clusterIP"] = "None"  # ignored by the agent: no family rule
    accepted(tenant.request("POST", services(TEAM_A), headless))
    refused(tenant.request("POST", services(TEAM_A), service("theirs", [B_IP])),
            SERVICE_POLICY, B_IP, "pool 'tenant-b'", "admits only namespaces labelled tenant=b",
            "not namespace 'team-a'")
    refused(tenant.request("POST", services(TEAM_A), service("outside", [OUTSIDE_IP])),
            SERVICE_POLICY, OUTSIDE_IP, "lies in no bgpd pool")
    refused(tenant.request("POST", services(TEAM_A), service("lb", [LB_IP])),
            SERVICE_POLICY, LB_IP, "does not allow external-ip")
    # One good and several bad: every bad one is named, the good one is not.
    message = refused(
        tenant.request("POST", services(TEAM_A), service("mixed", [A_IP2, B_IP, OUTSIDE_IP])),
        SERVICE_POLICY, B_IP, OUTSIDE_IP)
    assert A_IP2 not in message


def test_a_selector_pool_admits_labelled_namespaces_only(cp, tenant):
    # The admin is held to the policy too; team-b carries tenant=b.
    accepted(cp.request("POST", services(TEAM_B), service("b", [B_IP])))
    refused(cp.request("POST", services(TEAM_B), service("a", [A_IP])),
            SERVICE_POLICY, A_IP, "admits only namespace team-a", "not namespace 'team-b'")
    accepted(cp.request("POST", services(TEAM_B), service("shared", [SHARED_IP2])))


def test_tenant_annotations_are_checked(tenant):
    def create(name: str, annotations: dict) -> tuple[int, dict]:
        return tenant.request("POST", services(TEAM_A), service(name, [], annotations))

    forty = ",".join(f"65000:{i}" for i in range(40))
    refused(create("forty", {"bgpd.dev/communities": forty}), SERVICE_POLICY,
            "bgpd.dev/communities: 40 entries exceed limits.max_communities 32")
    thirty_two = ",".join(f"65000:{i}" for i in range(32))
    accepted(create("thirty-two", {"bgpd.dev/communities": thirty_two,
                                   "bgpd.dev/large-communities": "64512:1:2, 64512:3:4",
                                   "bgpd.dev/local-pref": "200", "bgpd.dev/med": " 10 ",
                                   "bgpd.dev/advertise-external-ips": "False"}))
    refused(create("colour", {"bgpd.dev/colour": "blue"}), SERVICE_POLICY,
            '"bgpd.dev/colour": unknown annotation (known: advertise, advertise-cluster-ip,')
    refused(create("bad-community", {"bgpd.dev/communities": "65000:1, 65000:70000"}),
            SERVICE_POLICY, '"65000:70000" is not a community')
    refused(create("bad-large", {"bgpd.dev/large-communities": "1:2"}),
            SERVICE_POLICY, '"1:2" is not a large community')
    refused(create("bad-med", {"bgpd.dev/med": "4294967296"}), SERVICE_POLICY,
            'bgpd.dev/med: "4294967296" must be an integer')
    refused(create("bad-flag", {"bgpd.dev/advertise": "maybe"}), SERVICE_POLICY,
            'bgpd.dev/advertise: "maybe" must be true or false')
    refused(create("long", {"bgpd.dev/communities": "1:1," * 700}), SERVICE_POLICY,
            "value of 2800 characters is longer than 2048")
    # A newline in the value must not cost the message (the API server drops such ones).
    refused(create("newline", {"bgpd.dev/local-pref": "1\n2"}), SERVICE_POLICY,
            r'"1\n2" must be an integer')
    # Not ours: any other annotation passes.
    accepted(create("others", {"example.com/whatever": "x" * 5000}))


def test_tenant_pod_external_ips(tenant):
    key = "bgpd.dev/external-ips"
    refused(tenant.request("POST", pods(TEAM_A), pod("bad", {key: f"{A_IP}, not-an-ip"})),
            POD_POLICY, '"not-an-ip" is not an IP address')
    refused(tenant.request("POST", pods(TEAM_A), pod("theirs", {key: B_IP})),
            POD_POLICY, B_IP, "admits only namespaces labelled tenant=b")
    refused(tenant.request("POST", pods(TEAM_A), pod("loopback", {key: "127.0.0.1"})),
            POD_POLICY, "127.0.0.1 is not a routable address")
    refused(tenant.request("POST", pods(TEAM_A), pod("long", {key: (A_IP + ",") * 200})),
            POD_POLICY, "is longer than 2048")
    refused(tenant.request("POST", pods(TEAM_A), pod("colour", {"bgpd.dev/colour": "x"})),
            POD_POLICY, "unknown annotation (known: external-ips)")
    accepted(tenant.request("POST", pods(TEAM_A), pod("good", {key: f" {A_IP} ,{SHARED_IP},"})))
    # Updates: a restricted pool's address may be added, a shared pool's may not; removing
    # is fine.
    accepted(tenant.request("PATCH", pods(TEAM_A, "good"), {"metadata": {"annotations": {
        key: f"{A_IP},{A_IP2},{SHARED_IP}"}}}, MERGE))
    refused(tenant.request("PATCH", pods(TEAM_A, "good"), {"metadata": {"annotations": {
        key: f"{A_IP},{SHARED_IP},{SHARED_IP2}"}}}, MERGE),
            POD_POLICY, f"cannot add {SHARED_IP2} to an existing Pod: create a new Pod to "
                        f"claim a new address in shared pool 'shared': the oldest claim wins")
    accepted(tenant.request("PATCH", pods(TEAM_A, "good"), {"metadata": {"annotations": {
        key: A_IP}}}, MERGE))


def test_claims_in_a_shared_pool_cannot_be_added_by_editing(tenant):
    first = accepted(tenant.request("POST", services(TEAM_A), service("first", [SHARED_IP])))
    assert first["spec"]["externalIPs"] == [SHARED_IP]
    # An old Service taking a new address would win it from any newer claimant: refused.
    refused(tenant.request("PATCH", services(TEAM_A, "first"),
                           {"spec": {"externalIPs": [SHARED_IP, SHARED_IP2]}}, MERGE),
            SERVICE_POLICY, f"cannot add {SHARED_IP2} to an existing Service: create a new "
                            f"Service to claim a new address in shared pool 'shared': the "
                            f"oldest claim wins")
    # A new Service may claim it (it is the newest claim: it wins nothing from anyone).
    accepted(tenant.request("POST", services(TEAM_A), service("second", [SHARED_IP2])))
    # Annotations and other fields of the old Service can still change; the kept address
    # is not judged again.
    accepted(tenant.request("PATCH", services(TEAM_A, "first"), {"metadata": {
        "labels": {"edited": "yes"}, "annotations": {"bgpd.dev/med": "5"}}}, MERGE))
    # In a pool of team-a alone there is nobody to take an address from: adding is fine.
    accepted(tenant.request("PATCH", services(TEAM_A, "first"),
                            {"spec": {"externalIPs": [SHARED_IP, A_IP2]}}, MERGE))
    # Removing is always allowed.
    accepted(tenant.request("PATCH", services(TEAM_A, "first"),
                            {"spec": {"externalIPs": [A_IP2]}}, MERGE))
    done = accepted(tenant.request("PATCH", services(TEAM_A, "first"),
                                   {"spec": {"externalIPs": None}}, MERGE))
    assert not done["spec"].get("externalIPs")


def test_without_the_binding_the_same_objects_are_accepted(cp, objects, tenant):
    bad_service = service("unbound", [OUTSIDE_IP], {"bgpd.dev/colour": "blue"})
    bad_pod = pod("unbound", {"bgpd.dev/external-ips": B_IP})
    refused(tenant.request("POST", services(TEAM_A), bad_service), SERVICE_POLICY, OUTSIDE_IP)
    refused(tenant.request("POST", pods(TEAM_A), bad_pod), POD_POLICY, B_IP)
    for name in (SERVICE_POLICY, POD_POLICY):
        cp.api("DELETE", f"{ADMISSION}/validatingadmissionpolicybindings/{name}")
    try:
        def created(path: str, body: dict) -> bool:
            status, _ = tenant.request("POST", path, body)
            return 200 <= status < 300

        eventually(lambda: created(services(TEAM_A), bad_service),
                   "the bad Service accepted without the binding", ACTIVE_TIMEOUT_S)
        eventually(lambda: created(pods(TEAM_A), bad_pod),
                   "the bad Pod accepted without the binding", ACTIVE_TIMEOUT_S)
    finally:
        apply_objects(cp, objects)
        wait_active(cp)
    # Bound again: objects written meanwhile stay editable (only what a request changes is
    # judged), but nothing new that is bad gets in.
    accepted(tenant.request("PATCH", services(TEAM_A, "unbound"),
                            {"metadata": {"labels": {"edited": "yes"}}}, MERGE))
    accepted(tenant.request("PATCH", pods(TEAM_A, "unbound"),
                            {"metadata": {"labels": {"edited": "yes"}}}, MERGE))
    refused(tenant.request("PATCH", services(TEAM_A, "unbound"),
                           {"spec": {"externalIPs": [OUTSIDE_IP, "192.0.2.11"]}}, MERGE),
            SERVICE_POLICY, "192.0.2.11 lies in no bgpd pool")
    refused(tenant.request("PATCH", services(TEAM_A, "unbound"),
                           {"metadata": {"annotations": {"bgpd.dev/colour": "red"}}}, MERGE),
            SERVICE_POLICY, '"bgpd.dev/colour": unknown annotation')


def test_message_size_check_when_the_limits_allow_too_much(cp, objects, tenant):
    """With limits above what fits one BGP message, the policy computes the UPDATE's size
    as the agent does (bgpd.policy.attributes.encoded_size)."""
    big = render_policy(parse_config(yaml.safe_load(
        CONFIG.replace("limits: {max_communities: 32}",
                       "limits: {max_communities: 1000, max_large_communities: 330}"))))
    (policy,) = [o for o in big if o["metadata"]["name"] == SERVICE_POLICY
                 and o["kind"] == "ValidatingAdmissionPolicy"]
    too_big = {"bgpd.dev/communities": ",".join(f"1:{i}" for i in range(300)),
               "bgpd.dev/large-communities": ",".join(f"1:1:{i}" for i in range(250)),
               "bgpd.dev/med": "1"}
    assert all(len(v) <= 2048 for v in too_big.values())  # not refused for their length
    size = encoded_size(Attributes(communities=("0:0",) * 300,
                                   large_communities=("0:0:0",) * 250, med=1), 6)
    assert size > BGP_MAX_MESSAGE
    replace_objects(cp, [policy])
    try:
        def refused_for_size() -> bool:
            status, answer = tenant.request("POST", services(TEAM_A),
                                            service("too-big", [], too_big))
            if 200 <= status < 300:
                tenant.request("DELETE", services(TEAM_A, "too-big"))
            return status == 422 and "-byte UPDATE" in answer.get("message", "")

        eventually(refused_for_size, "the size check of the big-limits policy", ACTIVE_TIMEOUT_S)
        refused(tenant.request("POST", services(TEAM_A), service("too-big", [], too_big)),
                SERVICE_POLICY, f"the attributes make a {size}-byte UPDATE, over the "
                                f"{BGP_MAX_MESSAGE}-byte BGP message")
        # 40 communities are within these limits now.
        accepted(tenant.request("POST", services(TEAM_A), service("forty", [], {
            "bgpd.dev/communities": ",".join(f"65000:{i}" for i in range(40))})))
    finally:
        (original,) = [o for o in objects if o["metadata"]["name"] == SERVICE_POLICY
                       and o["kind"] == "ValidatingAdmissionPolicy"]
        replace_objects(cp, [original])

        def forty_refused() -> bool:
            status, _ = tenant.request("POST", services(TEAM_A), service("forty-again", [], {
                "bgpd.dev/communities": ",".join(f"65000:{i}" for i in range(40))}))
            if 200 <= status < 300:
                tenant.request("DELETE", services(TEAM_A, "forty-again"))
            return status == 422

        eventually(forty_refused, "the original policy back", ACTIVE_TIMEOUT_S)
