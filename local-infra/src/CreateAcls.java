// Creates ACLs through Kafka's Admin API, run by local-infra's sasl_ssl mode
// (apache_kafka_security.rs) with `java -cp <kafka jars> CreateAcls.java
// <client.properties>`. Reads one ACL per line from stdin, tab-separated:
// principal, resource type, pattern type, resource name, operation.
import java.io.BufferedReader;
import java.io.FileInputStream;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class CreateAcls {
    public static void main(String[] args) throws Exception {
        Properties properties = new Properties();
        try (InputStream in = new FileInputStream(args[0])) {
            properties.load(in);
        }
        List<AclBinding> bindings = new ArrayList<>();
        BufferedReader lines = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line = lines.readLine(); line != null; line = lines.readLine()) {
            if (line.isBlank()) {
                continue;
            }
            String[] field = line.split("\t", -1);
            if (field.length != 5) {
                throw new IllegalArgumentException("an ACL line has 5 fields: " + line);
            }
            ResourcePattern pattern = new ResourcePattern(
                ResourceType.valueOf(field[1]), field[3], PatternType.valueOf(field[2]));
            AccessControlEntry entry = new AccessControlEntry(
                "User:" + field[0], "*", AclOperation.valueOf(field[4]), AclPermissionType.ALLOW);
            bindings.add(new AclBinding(pattern, entry));
        }
        try (Admin admin = Admin.create(properties)) {
            admin.createAcls(bindings).all().get();
        }
        System.out.println("created " + bindings.size() + " ACLs");
    }
}
