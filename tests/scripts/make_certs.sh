#!/bin/sh
# make_certs.sh DIR PORT: a CA, a server certificate for 127.0.0.1 and a client
# certificate (EC keys, as k3s makes them), plus a k3s-style kubeconfig DIR/k3s.yaml.
set -e
d=$1; port=$2
mkdir -p "$d"; cd "$d"
openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -subj "/CN=k3s-server-ca" -days 2 -out ca.crt 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out server.key 2>/dev/null
openssl req -new -key server.key -subj "/CN=kube-apiserver" -out server.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > san.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext -out server.crt 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out client.key 2>/dev/null
openssl req -new -key client.key -subj "/O=system:masters/CN=system:admin" -out client.csr 2>/dev/null
printf 'extendedKeyUsage=clientAuth\n' > client.ext
openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile client.ext -out client.crt 2>/dev/null
b() { base64 -w0 "$1"; }
cat > k3s.yaml <<YAML
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: $(b ca.crt)
    server: https://127.0.0.1:$port
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: $(b client.crt)
    client-key-data: $(b client.key)
YAML
