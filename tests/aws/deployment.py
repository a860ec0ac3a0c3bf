"""What `infra/template.yaml` deploys, resolved for one test account: the input of the
integration tests that run the functions under the template's own IAM roles.

    python3 tests/aws/deployment.py TEMPLATE --stack NAME --endpoint URL [--api-origin URL]
        [--account ID] [--region R] [--param Name=Value ...] [--deploy]

The SAM template is transformed locally with aws-sam-translator (as CloudFormation's
`AWS::Serverless-2016-10-31` transform would), and the intrinsics of the result (Ref, Fn::Sub,
Fn::GetAtt, Fn::If with the template's conditions, Fn::FindInMap, Fn::Join, Fn::Select,
Fn::Split) are resolved with the template's parameter defaults (overridden by --param), the
pseudo parameters of the account and region given, and a physical name for each resource:
its own name property where the template sets one, else `<stack>-<LogicalId>`. Queue URLs are
built on --endpoint as moto serves them; the HTTP API's endpoint is --api-origin when given
(where the test serves the API), so the bucket's CORS rules name that origin.

Prints JSON: the bucket (name, CORS rules), the queues (name, URL, ARN, attributes), the IAM
roles (inline and managed policies), the functions (role, environment, timeout, memory,
reserved concurrency), the SQS event source mappings and the bucket's notifications. Nothing in
it is written by hand: change the template and the tests change with it. With --deploy it also
creates all of it on the moto server at --endpoint (see `deploy`) and adds the credentials.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

from cfnlint.decode import decode

NO_VALUE = object()


class ResolveError(Exception):
    pass


def plain(value):
    """cfn-lint's node types as plain dicts, lists and strings."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def packaged(template: dict, account: str, region: str) -> dict:
    """The template as `sam package` hands it to CloudFormation: code and images at uploaded
    locations instead of local folders."""
    for logical, res in template.get("Resources", {}).items():
        props = res.setdefault("Properties", {})
        if res["Type"] == "AWS::Serverless::Function":
            if props.get("PackageType") == "Image":
                props["ImageUri"] = f"{account}.dkr.ecr.{region}.amazonaws.com/twin:{logical.lower()}"
            else:
                props["CodeUri"] = f"s3://artifacts/{logical}.zip"
        elif res["Type"] == "AWS::Serverless::LayerVersion":
            props["ContentUri"] = f"s3://artifacts/{logical}.zip"
    return template


def sam_transform(template: dict, params: dict) -> dict:
    from samtranslator.translator.transform import transform

    class NoManagedPolicies:
        def load(self):
            return {}

    return transform(template, params, NoManagedPolicies())


class Resolver:
    def __init__(self, template, params, account, region, stack, endpoint, api_origin):
        self.t = template
        self.account = account
        self.region = region
        self.stack = stack
        self.endpoint = endpoint.rstrip("/")
        self.api_origin = api_origin
        self.params = {}
        for name, spec in template.get("Parameters", {}).items():
            if name in params:
                self.params[name] = params[name]
            elif "Default" in spec:
                self.params[name] = spec["Default"]
            else:
                raise ResolveError(f"parameter {name} has no default: pass --param {name}=...")
        self.pseudo = {
            "AWS::AccountId": account,
            "AWS::Region": region,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": stack,
            "AWS::StackId": f"arn:aws:cloudformation:{region}:{account}:stack/{stack}/test",
        }
        self.conditions = {}
        self.resources = template.get("Resources", {})

    # --------------------------------------------------------------------- names of resources
    def physical_name(self, logical):
        r = self.resources.get(logical)
        if r is None:
            raise ResolveError(f"no resource {logical}")
        props = r.get("Properties", {})
        name_prop = {
            "AWS::S3::Bucket": "BucketName",
            "AWS::SQS::Queue": "QueueName",
            "AWS::IAM::Role": "RoleName",
            "AWS::Lambda::Function": "FunctionName",
            "AWS::Logs::LogGroup": "LogGroupName",
        }.get(r["Type"])
        if name_prop and name_prop in props:
            return self.resolve(props[name_prop])
        name = f"{self.stack}-{logical}"
        if r["Type"] == "AWS::S3::Bucket":
            name = name.lower()
        return name

    def ref(self, name):
        if name in self.params:
            return self.params[name]
        if name in self.pseudo:
            return self.pseudo[name]
        if name == "AWS::NoValue":
            return NO_VALUE
        r = self.resources.get(name)
        if r is None:
            raise ResolveError(f"Ref to unknown {name}")
        ty = r["Type"]
        if ty == "AWS::SQS::Queue":
            return self.queue_url(name)
        if ty == "AWS::ApiGatewayV2::Api":
            return self.api_id(name)
        if ty == "AWS::SecretsManager::Secret":
            return f"arn:aws:secretsmanager:{self.region}:{self.account}:secret:{self.physical_name(name)}"
        return self.physical_name(name)

    def api_id(self, logical):
        return re.sub(r"[^a-z0-9]", "", logical.lower())[:10]

    def queue_url(self, logical):
        return f"{self.endpoint}/{self.account}/{self.physical_name(logical)}"

    def get_att(self, logical, attr):
        r = self.resources.get(logical)
        if r is None:
            raise ResolveError(f"GetAtt of unknown {logical}")
        ty = r["Type"]
        name = self.physical_name(logical) if ty != "AWS::ApiGatewayV2::Api" else None
        arn = {
            "AWS::S3::Bucket": lambda: f"arn:aws:s3:::{name}",
            "AWS::SQS::Queue": lambda: f"arn:aws:sqs:{self.region}:{self.account}:{name}",
            "AWS::IAM::Role": lambda: f"arn:aws:iam::{self.account}:role/{name}",
            "AWS::Lambda::Function": lambda: f"arn:aws:lambda:{self.region}:{self.account}:function:{name}",
            "AWS::Logs::LogGroup": lambda: f"arn:aws:logs:{self.region}:{self.account}:log-group:{name}:*",
        }
        if attr == "Arn" and ty in arn:
            return arn[ty]()
        if ty == "AWS::SQS::Queue" and attr == "QueueName":
            return name
        if ty == "AWS::SQS::Queue" and attr == "QueueUrl":
            return self.queue_url(logical)
        if ty == "AWS::ApiGatewayV2::Api" and attr == "ApiEndpoint":
            return self.api_endpoint(logical)
        if ty == "AWS::ApiGatewayV2::Api" and attr == "ApiId":
            return self.api_id(logical)
        raise ResolveError(f"GetAtt {logical}.{attr} ({ty}) is not known to the resolver")

    def api_endpoint(self, logical):
        return f"https://{self.api_id(logical)}.execute-api.{self.region}.amazonaws.com"

    # ------------------------------------------------------------------------ the intrinsics
    def condition(self, name):
        if name not in self.conditions:
            spec = self.t.get("Conditions", {}).get(name)
            if spec is None:
                raise ResolveError(f"unknown condition {name}")
            self.conditions[name] = bool(self.resolve(spec))
        return self.conditions[name]

    def sub(self, text, variables):
        def one(m):
            inner = m.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            if inner in variables:
                return str(variables[inner])
            if "." in inner and not inner.startswith("AWS::"):
                logical, attr = inner.split(".", 1)
                return str(self.get_att(logical, attr))
            return str(self.ref(inner))

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def resolve(self, v):
        if isinstance(v, list):
            out = [self.resolve(x) for x in v]
            return [x for x in out if x is not NO_VALUE]
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            (k, a), = v.items()
            if k == "Ref":
                return self.ref(a)
            if k == "Fn::GetAtt":
                parts = a if isinstance(a, list) else a.split(".", 1)
                return self.get_att(parts[0], self.resolve(parts[1]))
            if k == "Fn::Sub":
                if isinstance(a, str):
                    return self.sub(a, {})
                variables = {n: self.resolve(x) for n, x in a[1].items()}
                return self.sub(a[0], variables)
            if k == "Fn::Join":
                return str(a[0]).join(str(x) for x in self.resolve(a[1]))
            if k == "Fn::If":
                return self.resolve(a[1] if self.condition(a[0]) else a[2])
            if k == "Fn::FindInMap":
                m, k1, k2 = (str(self.resolve(x)) for x in a)
                return self.t["Mappings"][m][k1][k2]
            if k == "Fn::Select":
                return self.resolve(a[1])[int(self.resolve(a[0]))]
            if k == "Fn::Split":
                return str(self.resolve(a[1])).split(a[0])
            if k == "Fn::Equals":
                return str(self.resolve(a[0])) == str(self.resolve(a[1]))
            if k == "Fn::Not":
                return not self.resolve(a[0])
            if k == "Fn::And":
                return all(self.resolve(x) for x in a)
            if k == "Fn::Or":
                return any(self.resolve(x) for x in a)
            if k == "Condition":
                return self.condition(a)
            if k.startswith("Fn::"):
                raise ResolveError(f"{k} is not known to the resolver")
        out = {}
        for key, x in v.items():
            r = self.resolve(x)
            if r is not NO_VALUE:
                out[key] = r
        return out

    def present(self, resource):
        cond = resource.get("Condition")
        return cond is None or self.condition(cond)


def queue_attributes(props):
    attrs = {}
    for key in ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds",
                "MaximumMessageSize", "ReceiveMessageWaitTimeSeconds", "SqsManagedSseEnabled"):
        if key in props:
            value = props[key]
            attrs[key] = str(value).lower() if isinstance(value, bool) else str(value)
    if "RedrivePolicy" in props:
        rp = props["RedrivePolicy"]
        attrs["RedrivePolicy"] = json.dumps({
            "deadLetterTargetArn": rp["deadLetterTargetArn"],
            "maxReceiveCount": str(rp["maxReceiveCount"]),
        })
    return attrs


def deployment(args):
    template, errors = decode(args.template)
    if errors:
        raise ResolveError("\n".join(str(e) for e in errors))
    template = plain(template)
    params = dict(p.split("=", 1) for p in args.param)
    pseudo = {"AWS::Region": args.region, "AWS::AccountId": args.account, "AWS::Partition": "aws"}
    cfn = sam_transform(packaged(template, args.account, args.region), {**params, **pseudo})
    r = Resolver(cfn, params, args.account, args.region, args.stack, args.endpoint, args.api_origin)
    out = {"account": args.account, "region": args.region, "stack": args.stack, "bucket": None,
           "queues": {}, "roles": {}, "functions": {}, "event_sources": [], "notifications": []}
    resources = {k: v for k, v in cfn["Resources"].items() if r.present(v)}
    for logical, res in resources.items():
        ty = res["Type"]
        if ty not in ("AWS::S3::Bucket", "AWS::SQS::Queue", "AWS::IAM::Role",
                      "AWS::Lambda::Function", "AWS::Lambda::EventSourceMapping"):
            continue
        props = r.resolve(res.get("Properties", {}))
        if ty == "AWS::S3::Bucket":
            if out["bucket"] is not None:
                raise ResolveError("the template has more than one bucket")
            notifications = props.get("NotificationConfiguration", {})
            for n in notifications.get("LambdaConfigurations", []):
                rules = n.get("Filter", {}).get("S3Key", {}).get("Rules", [])
                out["notifications"].append({
                    "function": function_logical(resources, r, n["Function"]),
                    "event": n["Event"],
                    "prefix": next((x["Value"] for x in rules if x["Name"].lower() == "prefix"), ""),
                    "suffix": next((x["Value"] for x in rules if x["Name"].lower() == "suffix"), ""),
                })
            out["bucket"] = {
                "logical": logical,
                "name": r.physical_name(logical),
                "cors": props.get("CorsConfiguration", {}).get("CorsRules", []),
            }
        elif ty == "AWS::SQS::Queue":
            out["queues"][logical] = {
                "name": r.physical_name(logical),
                "url": r.queue_url(logical),
                "arn": r.get_att(logical, "Arn"),
                "attributes": queue_attributes(props),
            }
        elif ty == "AWS::IAM::Role":
            out["roles"][logical] = {
                "name": r.physical_name(logical),
                "arn": r.get_att(logical, "Arn"),
                "policies": {p["PolicyName"]: p["PolicyDocument"] for p in props.get("Policies", [])},
                "managed": props.get("ManagedPolicyArns", []),
            }
        elif ty == "AWS::Lambda::Function":
            role_arn = props["Role"]
            role = next((k for k, v in resources.items() if v["Type"] == "AWS::IAM::Role"
                         and r.get_att(k, "Arn") == role_arn), None)
            if role is None:
                raise ResolveError(f"{logical}'s role {role_arn} is not in the template")
            out["functions"][logical] = {
                "name": r.physical_name(logical),
                "role": role,
                "environment": props.get("Environment", {}).get("Variables", {}),
                "timeout": int(props.get("Timeout", 3)),
                "memory": int(props.get("MemorySize", 128)),
                "reserved_concurrency": (int(props["ReservedConcurrentExecutions"])
                                         if "ReservedConcurrentExecutions" in props else None),
            }
        elif ty == "AWS::Lambda::EventSourceMapping":
            queue = next((k for k, v in out_queues_arns(resources, r).items()
                          if v == props.get("EventSourceArn")), None)
            out["event_sources"].append({
                "function": function_logical(resources, r, props["FunctionName"]),
                "queue": queue,
                "batch_size": int(props.get("BatchSize", 10)),
                "maximum_batching_window": int(props.get("MaximumBatchingWindowInSeconds", 0)),
                "report_batch_item_failures":
                    "ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
            })
    if args.api_origin:
        # Where the test serves the HTTP API stands for the API's execute-api endpoint.
        text = json.dumps(out)
        for logical, res in resources.items():
            if res["Type"] == "AWS::ApiGatewayV2::Api":
                text = text.replace(r.api_endpoint(logical), args.api_origin.rstrip("/"))
        out = json.loads(text)
    return out


def deploy(spec, endpoint):
    """Creates what `spec` describes on the moto server at `endpoint` (before IAM is enforced):
    the bucket with its CORS rules, the queues (dead-letter queues first), every role with its
    policies and an administrator; adds `admin` and each role's `credentials` to `spec`."""
    import boto3

    kw = dict(endpoint_url=endpoint, region_name=spec["region"],
              aws_access_key_id="test", aws_secret_access_key="test")
    s3, sqs, iam, sts = (boto3.client(x, **kw) for x in ("s3", "sqs", "iam", "sts"))
    bucket = spec["bucket"]
    s3.create_bucket(Bucket=bucket["name"])
    if bucket["cors"]:
        # CloudFormation's CorsRule names, as the S3 API spells them.
        api_names = {"Id": "ID", "ExposedHeaders": "ExposeHeaders", "MaxAge": "MaxAgeSeconds"}
        rules = [{api_names.get(k, k): v for k, v in rule.items()} for rule in bucket["cors"]]
        s3.put_bucket_cors(Bucket=bucket["name"], CORSConfiguration={"CORSRules": rules})
    # A redrive policy names an existing queue.
    for logical, q in sorted(spec["queues"].items(), key=lambda kv: "RedrivePolicy" in kv[1]["attributes"]):
        url = sqs.create_queue(QueueName=q["name"], Attributes=q["attributes"])["QueueUrl"]
        if url != q["url"]:
            raise ResolveError(f"{logical}: moto's URL {url} is not the resolved {q['url']}")
    everything = {"Version": "2012-10-17",
                  "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.create_user(UserName="twin-admin")
    iam.put_user_policy(UserName="twin-admin", PolicyName="everything",
                        PolicyDocument=json.dumps(everything))
    key = iam.create_access_key(UserName="twin-admin")["AccessKey"]
    spec["admin"] = {"key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    # The template's roles trust the Lambda service; here the test stands in for it.
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]}
    for logical, role in spec["roles"].items():
        iam.create_role(RoleName=role["name"], AssumeRolePolicyDocument=json.dumps(trust))
        for name, doc in role["policies"].items():
            iam.put_role_policy(RoleName=role["name"], PolicyName=name, PolicyDocument=json.dumps(doc))
        for arn in role["managed"]:
            iam.attach_role_policy(RoleName=role["name"], PolicyArn=arn)
        c = sts.assume_role(RoleArn=role["arn"], RoleSessionName=f"{logical}-test",
                            DurationSeconds=3600)["Credentials"]
        role["credentials"] = {"key": c["AccessKeyId"], "secret": c["SecretAccessKey"],
                               "token": c["SessionToken"]}


def out_queues_arns(resources, r):
    return {k: r.get_att(k, "Arn") for k, v in resources.items() if v["Type"] == "AWS::SQS::Queue"}


def function_logical(resources, r, value):
    """The logical id of the function a name or ARN stands for."""
    for k, v in resources.items():
        if v["Type"] == "AWS::Lambda::Function" and value in (r.physical_name(k), r.get_att(k, "Arn")):
            return k
    raise ResolveError(f"{value} is no function of the template")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("template")
    parser.add_argument("--stack", required=True)
    parser.add_argument("--endpoint", required=True, help="the SQS endpoint queue URLs start with")
    parser.add_argument("--api-origin", default="")
    parser.add_argument("--account", default="123456789012")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--param", action="append", default=[])
    parser.add_argument("--deploy", action="store_true",
                        help="also create it all on the moto server at --endpoint")
    args = parser.parse_args()
    os.environ.setdefault("AWS_DEFAULT_REGION", args.region)
    try:
        spec = deployment(args)
        if args.deploy:
            deploy(spec, args.endpoint)
        json.dump(spec, sys.stdout, indent=1, sort_keys=True)
    except ResolveError as e:
        sys.exit(f"deployment.py: {e}")


if __name__ == "__main__":
    main()
