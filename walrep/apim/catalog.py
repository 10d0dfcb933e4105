"""The world an API-M generator draws from: tenants, APIs, applications, users, gateways.

Everything here is built once, from one ``random.Random``, before the first event, so
that drawing an event is a few table look-ups (see ``walrep.apim.generator``). The
catalog holds only tuples, frozen dataclasses and lists built in a fixed order: nothing
iterates a set or a dict whose order could depend on string hashing.

Shape (all popularity is Zipf: the entity of rank ``k`` gets weight ``1 / (k + 1)**s``):

- ``tenants`` tenant domains; ``carbon.super`` (WSO2's super tenant) is the largest.
  Tenants are isolated: an application subscribes to APIs of its own tenant and is used
  by users of its own tenant.
- ``apis`` API names, each with 1..``versions_max`` versions (``/pizzashack/1.0.0``;
  ``/t/acme.com/orders/2.0.0`` in a tenant), a creator, 2..8 resources (template +
  method) and one or two backend endpoints per version.
- ``applications`` applications, each owned by a subscriber of its tenant (an owner's
  first application is ``DefaultApplication``, as in the Developer Portal), with a
  consumer key and 1..``subscriptions_max`` subscriptions ("routes": application ->
  API version, at a subscription tier).
- ``users`` end users (``name@tenant``), each with one IP address and one user agent.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

SUPER_TENANT: Final = "carbon.super"
_TENANT_DOMAINS: Final = (
    SUPER_TENANT,
    *("acme.com", "globex.io", "initech.org", "umbrella.net", "hooli.dev", "stark.tech"),
)
# (apiName, context slug): the first is WSO2's sample API.
_API_NAMES: Final = (
    *(("PizzaShackAPI", "pizzashack"), ("OrdersAPI", "orders"), ("PaymentsAPI", "payments")),
    *(("InventoryAPI", "inventory"), ("CatalogAPI", "catalog"), ("ShippingAPI", "shipping")),
    *(("WeatherAPI", "weather"), ("AccountsAPI", "accounts"), ("BillingAPI", "billing")),
    *(("CustomersAPI", "customers"), ("LoyaltyAPI", "loyalty"), ("NotifyAPI", "notify")),
    *(("SearchAPI", "search"), ("RecommendAPI", "recommend"), ("ProfilesAPI", "profiles")),
    *(("ReviewsAPI", "reviews"), ("TicketsAPI", "tickets"), ("BookingsAPI", "bookings")),
    *(("FlightsAPI", "flights"), ("HotelsAPI", "hotels"), ("MapsAPI", "maps")),
    *(("GeocodeAPI", "geocode"), ("TranslateAPI", "translate"), ("SmsAPI", "sms")),
    *(("EmailAPI", "email"), ("KycAPI", "kyc"), ("FraudAPI", "fraud"), ("LedgerAPI", "ledger")),
    *(("FxRatesAPI", "fxrates"), ("QuotesAPI", "quotes"), ("ClaimsAPI", "claims")),
    *(("PoliciesAPI", "policies"), ("VehiclesAPI", "vehicles"), ("TelemetryAPI", "telemetry")),
    *(("DevicesAPI", "devices"), ("MediaAPI", "media"), ("NewsAPI", "news")),
    *(("StocksAPI", "stocks"), ("InvoicesAPI", "invoices"), ("TaxAPI", "tax")),
    *(("PayrollAPI", "payroll"), ("CrmAPI", "crm"), ("SupportAPI", "support")),
)
# (resource template, HTTP method); ``{...}`` is a path parameter.
_RESOURCES: Final = (
    *(("/*", "GET"), ("/menu", "GET"), ("/order", "POST"), ("/order/{orderId}", "GET")),
    *(("/order/{orderId}", "PUT"), ("/order/{orderId}", "DELETE"), ("/items", "GET")),
    *(("/items", "POST"), ("/items/{itemId}", "GET"), ("/items/{itemId}", "PATCH")),
    *(("/search", "GET"), ("/status", "GET"), ("/users/{userId}/history", "GET")),
    *(("/reports/daily", "GET"), ("/batch", "POST"), ("/events", "POST"), ("/health", "HEAD")),
)
_SUCCESS_CODE: Final = {"GET": 200, "HEAD": 200, "POST": 201, "PUT": 200, "PATCH": 200}
_APP_NAMES: Final = (
    *("DefaultApplication", "MobileApp", "WebPortal", "PartnerSync", "Dashboard"),
    *("BatchJobs", "IoTBridge", "CheckoutService", "BackOffice", "Chatbot"),
)
_FIRST_NAMES: Final = (
    *("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"),
    *("mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "wendy"),
    *("yusuf", "zara", "amir", "bea", "chen", "dara", "emeka", "fatima", "goran", "hana"),
)
_USER_AGENTS: Final = (  # most popular first
    "okhttp/4.12.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 Mobile",
    "python-requests/2.31.0",
    "Apache-HttpClient/4.5.14 (Java/17.0.9)",
    "axios/1.6.2",
    "Go-http-client/1.1",
    "curl/8.5.0",
    "PostmanRuntime/7.36.0",
)
_TIERS: Final = ("Unlimited", "Gold", "Silver", "Bronze")
_TIER_WEIGHTS: Final = (0.4, 0.2, 0.25, 0.15)
_CONSUMER_KEY_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"
_CONSUMER_KEY_CHARS: Final = 28  # the length of WSO2's generated consumer keys
_RESOURCES_PER_API: Final = (2, 8)
_LATEST_VERSION_WEIGHT: Final = 0.55  # most traffic goes to the newest version
_BACKEND_MEDIAN_MS: Final = (4.0, 400.0)  # range of per-resource median backend times
_GUIDE_CELLS_MAX: Final = 4096

assert len(_TIERS) == len(_TIER_WEIGHTS) and math.isclose(sum(_TIER_WEIGHTS), 1.0)
assert _RESOURCES_PER_API[1] <= len(_RESOURCES)
assert len(set(_API_NAMES)) == len(_API_NAMES) and len(set(_RESOURCES)) == len(_RESOURCES)


def cumulative_weights(weights: Sequence[float]) -> tuple[float, ...]:
    """The normalized running sums of ``weights``: sample by bisecting a uniform draw.

    The last entry is exactly 1.0, so ``bisect_right(cumulative, u)`` for any ``u`` in
    [0, 1) (what ``random()`` returns) is a valid index. The generator's hot loop
    inlines that expression rather than calling ``draw``.
    """
    assert weights and all(w > 0 for w in weights), weights
    total = math.fsum(weights)
    running = 0.0
    cumulative = []
    for weight in weights:
        running += weight
        cumulative.append(running / total)
    cumulative[-1] = 1.0
    return tuple(cumulative)


def zipf_cumulative(n: int, exponent: float) -> tuple[float, ...]:
    """Zipf over ranks 0..n-1: rank ``k`` has weight ``1 / (k + 1) ** exponent``."""
    return cumulative_weights([1.0 / (k + 1) ** exponent for k in range(n)])


def guide(cumulative: tuple[float, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A guide table for bisecting ``cumulative``: (low, high) bounds per cell of [0, 1).

    For ``u`` in [0, 1) and ``cell = floor(u * cells)`` (``cells = len(low)``, a power of
    two, so the product is exact), ``bisect_right(cumulative, u)`` lies in
    ``[low[cell], high[cell]]``: the same index, found in a few comparisons, or none when
    the bounds are equal (a popular rank spans whole cells).
    """
    n = len(cumulative)
    cells = min(_GUIDE_CELLS_MAX, 1 << (n - 1).bit_length())  # >= n, capped
    low = tuple(bisect_right(cumulative, j / cells) for j in range(cells))
    high = tuple(min(bisect_right(cumulative, (j + 1) / cells), n - 1) for j in range(cells))
    return low, high


def draw(rng: random.Random, cumulative: tuple[float, ...]) -> int:
    """An index drawn by the weights ``cumulative`` was made from."""
    return bisect_right(cumulative, rng.random())


@dataclass(frozen=True, slots=True)
class Resource:
    template: str  # apiResourceTemplate, e.g. "/order/{orderId}"
    method: str
    path_prefix: str  # apiResourcePath before the path parameter (all of it if none)
    path_suffix: str  # apiResourcePath after the path parameter
    has_parameter: bool
    success_code: int
    backend_median_log_ms: float  # ln of the median backend time
    response_bytes_median: int
    cacheable: bool  # a GET of an API with response caching on


@dataclass(frozen=True, slots=True)
class ApiVersion:
    name: str
    version: str
    context: str
    creator: str
    creator_tenant_domain: str
    tenant: int
    resources: tuple[Resource, ...]
    resource_cumulative: tuple[float, ...]  # popularity of the resources
    destinations: tuple[str, ...]  # backend endpoints (load balanced)


@dataclass(frozen=True, slots=True)
class User:
    username: str  # with its tenant domain, as the gateway publishes it
    tenant_domain: str
    ip: str
    user_agent: str


@dataclass(frozen=True, slots=True)
class Application:
    application_id: str
    name: str
    owner: str  # the subscriber (applicationOwner, ThrottledOut's subscriber)
    consumer_key: str
    key_type: str  # meta_clientType: PRODUCTION or SANDBOX
    protocol: str
    tenant: int
    first_route: int  # its routes are catalog.routes[first_route : first_route + n]
    route_cumulative: tuple[float, ...]  # how often it uses each of its subscriptions


@dataclass(frozen=True, slots=True)
class Route:
    """One subscription: an application calling an API version at a tier."""

    index: int
    application: int
    api: ApiVersion
    tier: str


@dataclass(frozen=True, slots=True)
class Catalog:
    tenant_domains: tuple[str, ...]
    apis: tuple[ApiVersion, ...]
    applications: tuple[Application, ...]  # most active first
    application_cumulative: tuple[float, ...]
    routes: tuple[Route, ...]
    users_by_tenant: tuple[tuple[User, ...], ...]  # most active first in each tenant
    user_cumulative_by_tenant: tuple[tuple[float, ...], ...]
    hostnames: tuple[str, ...]  # gateway hostnames (apiHostname / hostname)


@dataclass(frozen=True, slots=True)
class CatalogShape:
    """The sizes of a catalog (validated by ``ApimGenerator``)."""

    tenants: int
    apis: int
    versions_max: int
    applications: int
    subscriptions_max: int
    users: int
    gateways: int
    zipf_exponent: float


def build_catalog(rng: random.Random, shape: CatalogShape) -> Catalog:
    """Draw a catalog of ``shape`` from ``rng`` (the same draws for the same rng state)."""
    tenant_domains = tuple(_tenant_domain(i) for i in range(shape.tenants))
    tenant_table = zipf_cumulative(shape.tenants, shape.zipf_exponent)
    apis_by_name = _build_apis(rng, shape, tenant_domains, tenant_table)
    users_by_tenant = _build_users(rng, shape, tenant_domains, tenant_table)
    user_tables = tuple(
        zipf_cumulative(len(users), shape.zipf_exponent) for users in users_by_tenant
    )
    applications, routes = _build_applications(
        rng, shape, tenant_domains, tenant_table, apis_by_name
    )
    return Catalog(
        tenant_domains=tenant_domains,
        apis=tuple(api for versions in apis_by_name for api in versions),
        applications=applications,
        application_cumulative=zipf_cumulative(len(applications), shape.zipf_exponent),
        routes=routes,
        users_by_tenant=tuple(users_by_tenant),
        user_cumulative_by_tenant=user_tables,
        hostnames=tuple(f"gw{i + 1}.apim.example.com" for i in range(shape.gateways)),
    )


def _tenant_domain(index: int) -> str:
    if index < len(_TENANT_DOMAINS):
        return _TENANT_DOMAINS[index]
    return f"tenant{index}.example.com"


def _tenants_of(rng: random.Random, count: int, tenant_table: tuple[float, ...]) -> list[int]:
    """The tenant of each of ``count`` entities: one for each tenant first, then by weight."""
    tenants = len(tenant_table)
    return [i if i < tenants else draw(rng, tenant_table) for i in range(count)]


def _build_apis(
    rng: random.Random,
    shape: CatalogShape,
    tenant_domains: tuple[str, ...],
    tenant_table: tuple[float, ...],
) -> list[tuple[ApiVersion, ...]]:
    """API versions grouped by API name, in popularity order of the names."""
    names = []
    for i in range(shape.apis):
        name, slug = _API_NAMES[i % len(_API_NAMES)]
        round_ = i // len(_API_NAMES)  # past the word list: OrdersAPI2, /orders2/...
        names.append(
            (name, slug) if round_ == 0 else (f"{name}{round_ + 1}", f"{slug}{round_ + 1}")
        )
    rng.shuffle(names)  # popularity must not follow the order of the word list
    result = []
    for (name, slug), tenant in zip(names, _tenants_of(rng, shape.apis, tenant_table), strict=True):
        domain = tenant_domains[tenant]
        creator = rng.choice(("admin", "publisher", f"{slug}-team"))
        if domain != SUPER_TENANT:
            creator = f"{creator}@{domain}"
        templates = rng.sample(_RESOURCES, rng.randint(*_RESOURCES_PER_API))
        cached = rng.random() < 0.25
        versions = []
        for major, minor in _versions(rng, shape.versions_max):
            version = f"{major}.{minor}.0"
            context = (
                f"/{slug}/{version}" if domain == SUPER_TENANT else f"/t/{domain}/{slug}/{version}"
            )
            ends = 1 if rng.random() < 0.7 else 2
            destinations = tuple(
                f"https://{slug}-{j + 1}.backend.internal:8443/{slug}/v{major}" for j in range(ends)
            )
            resources = tuple(_resource(rng, t, m, cached) for t, m in templates)
            table = zipf_cumulative(len(resources), shape.zipf_exponent)
            versions.append(
                ApiVersion(
                    name, version, context, creator, domain, tenant, resources, table, destinations
                )
            )
        result.append(tuple(versions))
    return result


def _versions(rng: random.Random, versions_max: int) -> list[tuple[int, int]]:
    """1..versions_max (major, minor) pairs in release order."""
    major, minor = 1, 0
    versions = [(major, minor)]
    for _ in range(rng.randint(1, versions_max) - 1):
        major, minor = (major + 1, 0) if rng.random() < 0.4 else (major, minor + 1)
        versions.append((major, minor))
    return versions


def _resource(rng: random.Random, template: str, method: str, cached: bool) -> Resource:
    prefix, brace, rest = template.partition("{")
    suffix = rest.partition("}")[2] if brace else ""
    low_ms, high_ms = _BACKEND_MEDIAN_MS
    median_log_ms = rng.uniform(math.log(low_ms), math.log(high_ms))
    size_bytes = 0 if method in ("DELETE", "HEAD") else int(math.exp(rng.uniform(4.5, 9.5)))
    return Resource(
        template=template,
        method=method,
        path_prefix=prefix,
        path_suffix=suffix,
        has_parameter=bool(brace),
        success_code=_SUCCESS_CODE.get(method, 204),
        backend_median_log_ms=median_log_ms,
        response_bytes_median=size_bytes,
        cacheable=cached and method == "GET",
    )


def _build_users(
    rng: random.Random,
    shape: CatalogShape,
    tenant_domains: tuple[str, ...],
    tenant_table: tuple[float, ...],
) -> list[tuple[User, ...]]:
    agents = zipf_cumulative(len(_USER_AGENTS), 1.0)
    by_tenant: list[list[User]] = [[] for _ in tenant_domains]
    for i, tenant in enumerate(_tenants_of(rng, shape.users, tenant_table)):
        domain = tenant_domains[tenant]
        first = _FIRST_NAMES[rng.randrange(len(_FIRST_NAMES))]
        username = f"{first}.{chr(97 + rng.randrange(26))}{i}@{domain}"  # i keeps it unique
        octet = rng.randint(11, 222)
        octet += octet == 127  # not loopback
        ip = f"{octet}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randint(1, 254)}"
        by_tenant[tenant].append(User(username, domain, ip, _USER_AGENTS[draw(rng, agents)]))
    return [tuple(users) for users in by_tenant]


def _build_applications(
    rng: random.Random,
    shape: CatalogShape,
    tenant_domains: tuple[str, ...],
    tenant_table: tuple[float, ...],
    apis_by_name: list[tuple[ApiVersion, ...]],
) -> tuple[tuple[Application, ...], tuple[Route, ...]]:
    # The API versions of each tenant, weighted by the API's popularity and the version.
    offered: list[list[ApiVersion]] = [[] for _ in tenant_domains]
    weights: list[list[float]] = [[] for _ in tenant_domains]
    for rank, versions in enumerate(apis_by_name):
        api_weight = 1.0 / (rank + 1) ** shape.zipf_exponent
        older = (1.0 - _LATEST_VERSION_WEIGHT) / (len(versions) - 1) if len(versions) > 1 else 0.0
        for i, api in enumerate(versions):
            latest = i == len(versions) - 1
            offered[api.tenant].append(api)
            weights[api.tenant].append(api_weight * (_LATEST_VERSION_WEIGHT if latest else older))
    offer_tables = [cumulative_weights(w) for w in weights]
    tier_table = cumulative_weights(_TIER_WEIGHTS)

    owners: list[list[list[str]]] = [[] for _ in tenant_domains]  # [tenant][owner] = app names
    drafts = []
    for tenant in _tenants_of(rng, shape.applications, tenant_table):
        domain = tenant_domains[tenant]
        if not owners[tenant] or rng.random() < 0.5:
            first = _FIRST_NAMES[rng.randrange(len(_FIRST_NAMES))]
            owner = f"{first}{len(owners[tenant])}"
            owners[tenant].append([owner if domain == SUPER_TENANT else f"{owner}@{domain}"])
        names = owners[tenant][rng.randrange(len(owners[tenant]))]
        k = len(names) - 1
        names.append(_APP_NAMES[k] if k < len(_APP_NAMES) else f"{_APP_NAMES[k % 10]}{k}")
        wanted = min(rng.randint(1, shape.subscriptions_max), len(offered[tenant]))
        chosen: list[int] = []
        for _ in range(64 * wanted):  # draws without replacement; bounded, may end short
            pick = draw(rng, offer_tables[tenant])
            if pick not in chosen:
                chosen.append(pick)
                if len(chosen) == wanted:
                    break
        apis = [offered[tenant][i] for i in chosen]
        tiers = [_TIERS[draw(rng, tier_table)] for _ in apis]
        key_type = "PRODUCTION" if rng.random() < 0.9 else "SANDBOX"
        protocol = "https-8243" if rng.random() < 0.95 else "http-8280"
        drafts.append((tenant, names[0], names[-1], key_type, protocol, apis, tiers))
    rng.shuffle(drafts)  # popularity must not follow creation order (one per tenant first)

    applications = []
    routes: list[Route] = []
    for index, (tenant, owner, name, key_type, protocol, apis, tiers) in enumerate(drafts):
        first_route = len(routes)
        routes.extend(
            Route(first_route + j, index, api, tier)
            for j, (api, tier) in enumerate(zip(apis, tiers, strict=True))
        )
        applications.append(
            Application(
                application_id=_uuid(rng),
                name=name,
                owner=owner,
                consumer_key="".join(rng.choices(_CONSUMER_KEY_ALPHABET, k=_CONSUMER_KEY_CHARS)),
                key_type=key_type,
                protocol=protocol,
                tenant=tenant,
                first_route=first_route,
                route_cumulative=zipf_cumulative(len(apis), shape.zipf_exponent),
            )
        )
    return tuple(applications), tuple(routes)


def _uuid(rng: random.Random) -> str:
    """A version-4 UUID string from ``rng`` (uuid.uuid4 would read the OS's randomness)."""
    bits = rng.getrandbits(128) & ~(0xF000 << 64) | (0x4000 << 64)  # version nibble 4
    bits = bits & ~(0xC << 60) | (0x8 << 60)  # variant 10
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
