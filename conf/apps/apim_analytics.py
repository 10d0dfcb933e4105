"""WSO2 API-M 3.x analytics, under WSO2's own stream, attribute and aggregation names.

The flagship app (specified in APPS.md, restated from WSO2's public analytics apps):
three input streams published by the API gateways, the string truncation WSO2 applies
before storing, nine incremental aggregations ``every sec ... year`` by the event's own
timestamp, and the ``ApiLastAccessSummary`` table. Retention is what WSO2 ships for these
apps (``@purge``): seconds 5 minutes, minutes 72 hours, hours 90 days, days 1 year,
months 10 years, years for ever (ApiExeTime: seconds 1 hour, minutes 3 days).

Stored columns (docs/apps.md): ``count``/``sum`` under their names, ``avg(x)`` as
``AGG_SUM_x`` with the shared ``AGG_COUNT``, then the carried attributes (the last value
seen in the bucket, in offset order).
"""

from __future__ import annotations

from walrep.engine.app import App, avg, count, max_, min_, sum_

app = App("apim_analytics")

# org.wso2.apimgt.statistics.request:3.2.0
app.stream(
    "Request",
    {
        "meta_clientType": "string",
        "applicationConsumerKey": "string",
        "applicationName": "string",
        "applicationId": "string",
        "applicationOwner": "string",
        "apiContext": "string",
        "apiName": "string",
        "apiVersion": "string",
        "apiResourcePath": "string",
        "apiResourceTemplate": "string",
        "apiMethod": "string",
        "apiCreator": "string",
        "apiCreatorTenantDomain": "string",
        "apiTier": "string",
        "apiHostname": "string",
        "username": "string",
        "userTenantDomain": "string",
        "userIp": "string",
        "userAgent": "string",
        "requestTimestamp": "long",
        "throttledOut": "bool",
        "responseTime": "int",
        "serviceTime": "int",
        "backendTime": "int",
        "responseCacheHit": "bool",
        "responseSize": "int",
        "protocol": "string",
        "responseCode": "int",
        "destination": "string",
        "securityLatency": "int",
        "throttlingLatency": "int",
        "requestMedLat": "int",
        "responseMedLat": "int",
        "backendLatency": "int",
        "otherLatency": "int",
        "gatewayType": "string",
        "label": "string",
    },
    timestamp="requestTimestamp",
)

# org.wso2.apimgt.statistics.fault:3.2.0
_FAULT_STRINGS = [
    "meta_clientType",
    "applicationConsumerKey",
    "apiName",
    "apiVersion",
    "apiContext",
    "apiResourcePath",
    "apiResourceTemplate",
    "apiMethod",
    "apiCreator",
    "username",
    "userTenantDomain",
    "apiCreatorTenantDomain",
    "hostname",
    "applicationId",
    "applicationName",
    "applicationOwner",
    "protocol",
    "errorCode",
    "errorMessage",
]
app.stream(
    "Fault",
    {**dict.fromkeys(_FAULT_STRINGS, "string"), "requestTimestamp": "long"},
    timestamp="requestTimestamp",
)

# org.wso2.apimgt.statistics.throttle:3.2.0
_THROTTLE_STRINGS = [
    "meta_clientType",
    "username",
    "userTenantDomain",
    "apiName",
    "apiVersion",
    "apiContext",
    "apiCreator",
    "apiCreatorTenantDomain",
    "apiResourceTemplate",
    "apiMethod",
    "applicationId",
    "applicationName",
    "subscriber",
    "throttledOutReason",
    "gatewayType",
]
app.stream(
    "ThrottledOut",
    {
        **dict.fromkeys(_THROTTLE_STRINGS, "string"),
        "throttledOutTimestamp": "long",
        "hostname": "string",
    },
    timestamp="throttledOutTimestamp",
)

# WSO2 cuts these strings before storing them.
_NAMES_150 = {"apiCreator": 150, "username": 150, "userTenantDomain": 150}
app.truncate(
    "Request", {"apiMethod": 20, **_NAMES_150, "apiCreatorTenantDomain": 150, "apiHostname": 200}
)
app.truncate("Fault", {"apiMethod": 20, **_NAMES_150, "apiCreatorTenantDomain": 150})
app.truncate(
    "ThrottledOut",
    {"apiMethod": 20, **_NAMES_150, "apiCreatorTenantDomain": 150, "throttledOutReason": 30},
)

RETENTION = {
    "sec": "5 min",
    "min": "72 hours",
    "hour": "90 days",
    "day": "1 year",
    "month": "10 years",
}
EXE_TIME_RETENTION = {**RETENTION, "sec": "1 hour", "min": "3 days"}
_API = ["apiName", "apiVersion", "apiCreator", "apiCreatorTenantDomain"]

app.aggregation(
    "ApiUserPerAppAgg",
    from_="Request",
    group_by=["apiContext", "apiHostname", "applicationId", "username", "userTenantDomain"],
    aggregates=[count("totalRequestCount")],
    carried=[*_API, "applicationName", "applicationOwner", "gatewayType", "label"],
    retention=RETENTION,
)
app.aggregation(
    "ApiVersionPerAppAgg",
    from_="Request",
    group_by=["apiContext", "apiHostname", "applicationId"],
    aggregates=[
        count("totalRequestCount"),
        sum_("aboveQuotaCount", of=lambda e: 1 if e["throttledOut"] else 0),
    ],
    carried=[*_API, "applicationName", "gatewayType", "label"],
    retention=RETENTION,
)
app.aggregation(
    "ApiResPathPerApp",
    from_="Request",
    group_by=["apiContext", "apiHostname", "applicationId", "apiResourceTemplate", "apiMethod"],
    aggregates=[count("totalRequestCount")],
    carried=[*_API, "applicationName", "gatewayType", "label"],
    retention=RETENTION,
)
app.aggregation(
    "ApiPerDestinationAgg",
    from_="Request",
    group_by=["apiContext", "apiHostname", "destination"],
    aggregates=[count("totalRequestCount")],
    carried=[*_API, "gatewayType", "label"],
    retention=RETENTION,
)
_LATENCIES = [
    "responseTime",
    "serviceTime",
    "backendTime",
    "securityLatency",
    "throttlingLatency",
    "requestMedLat",
    "responseMedLat",
    "backendLatency",
    "otherLatency",
]
app.aggregation(
    "ApiExeTime",
    from_="Request",
    group_by=["apiContext", "apiHostname", "apiResourceTemplate", "apiMethod"],
    aggregates=[
        *(avg(name) for name in _LATENCIES),
        # walrep's addition: the extremes behind the averages
        min_("minResponseTime", of="responseTime"),
        max_("maxResponseTime", of="responseTime"),
        min_("minBackendTime", of="backendTime"),
        max_("maxBackendTime", of="backendTime"),
    ],
    carried=_API,
    retention=EXE_TIME_RETENTION,
)
app.aggregation(
    "ApiErroranalysisAgg",
    from_="Request",
    group_by=["apiName", "apiVersion", "responseCode", "apiResourceTemplate"],
    aggregates=[
        sum_("backendLatency"),
        sum_("otherLatency"),
        sum_("responseLatency", of="responseTime"),
        count("totalRequestCount"),
    ],
    carried=[
        "apiMethod",
        "apiContext",
        "apiCreator",
        "apiCreatorTenantDomain",
        "applicationName",
        "label",
    ],
    retention=RETENTION,
)
app.aggregation(
    "ApiFaultyInvocationAgg",
    from_="Fault",
    group_by=["apiContext", "applicationId", "hostname"],
    aggregates=[count("totalFaultCount")],
    carried=[*_API, "applicationName"],
    retention=RETENTION,
)
app.aggregation(
    "ApiThrottledOutAgg",
    from_="ThrottledOut",
    group_by=["apiContext", "applicationId", "hostname"],
    aggregates=[count("throttledOutCount")],
    carried=[
        *_API,
        "username",
        "userTenantDomain",
        "applicationName",
        "subscriber",
        "throttledOutReason",
        "gatewayType",
    ],
    retention=RETENTION,
)
app.aggregation(
    "APIM_ReqCountAgg",
    from_=["Request", "ThrottledOut"],
    group_by=[*_API, "applicationName"],
    aggregates=[
        sum_("successCount", of={"Request": 1, "ThrottledOut": 0}),
        sum_("throttleCount", of={"Request": 0, "ThrottledOut": 1}),
    ],
    retention=RETENTION,
)
app.table(
    "ApiLastAccessSummary",
    from_="Request",
    key=["apiName", "apiCreator", "apiVersion", "apiCreatorTenantDomain"],
    values=[max_("lastAccessTime", of="requestTimestamp")],
)
