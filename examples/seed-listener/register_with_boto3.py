# The founding document's registration step, as written, against Lambent's AWS
# Lambda-compatible API: boto3's create_function pointed at a Lambent node
# (LAMBENT_URL, default http://127.0.0.1:9000). The document's Code line
# (`boto3.S3.S3_RESOURCE()...`) is not a real boto3 API, so the zip is built from
# this directory instead; everything else is the document's call.
import io
import os
import zipfile

import boto3

here = os.path.dirname(os.path.abspath(__file__))
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w") as z:
    z.write(os.path.join(here, "event_listener.py"), "event_listener.py")

lambda_client = boto3.client(
    'lambda',
    endpoint_url=os.environ.get("LAMBENT_URL", "http://127.0.0.1:9000"),
    region_name="us-east-1",
    aws_access_key_id="lambent",
    aws_secret_access_key="lambent",
)
lambda_client.create_function(
    FunctionName='event_listener',
    Runtime='python3.8',
    Role='arn:aws:iam::123456789012:role/lambda_role',
    Handler='event_listener.event_listener',
    Code=dict(ZipFile=buf.getvalue()),
    Description='An event listener function.'
)
