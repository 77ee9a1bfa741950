"""Sets up an ELBv2 target group in a running moto server for tests/aws `moto_conformance`.

Usage: python moto_setup.py http://127.0.0.1:PORT
Prints {"arn": ..., "name": ..., "nlb_arn": ...} as JSON on stdout.
"""

import json
import sys

import boto3

endpoint = sys.argv[1]
session = boto3.session.Session(
    aws_access_key_id="AKIDTEST",
    aws_secret_access_key="secret",
    region_name="us-east-1",
)
ec2 = session.client("ec2", endpoint_url=endpoint)
elbv2 = session.client("elbv2", endpoint_url=endpoint)

vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
vpc_id = vpcs[0]["VpcId"] if vpcs else ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]

name = "gracegate-conformance"
group = elbv2.create_target_group(
    Name=name,
    Protocol="HTTP",
    Port=80,
    VpcId=vpc_id,
    TargetType="ip",
    HealthCheckIntervalSeconds=10,
    HealthCheckTimeoutSeconds=4,
    HealthyThresholdCount=3,
    UnhealthyThresholdCount=2,
)["TargetGroups"][0]
arn = group["TargetGroupArn"]
elbv2.register_targets(
    TargetGroupArn=arn,
    Targets=[{"Id": "10.0.0.1", "Port": 80}, {"Id": "10.0.0.2", "Port": 80}],
)
elbv2.modify_target_group_attributes(
    TargetGroupArn=arn,
    Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "30"},
        {"Key": "slow_start.duration_seconds", "Value": "45"},
    ],
)
nlb = elbv2.create_target_group(
    Name=name + "-nlb", Protocol="TCP", Port=80, VpcId=vpc_id, TargetType="ip"
)["TargetGroups"][0]
print(json.dumps({"arn": arn, "name": name, "nlb_arn": nlb["TargetGroupArn"]}))
