-- The tables Django 5.2's migrations create for the apiMetrics models on MariaDB 10.11
-- ('manage.py sqlmigrate apiMetrics 0001' against a live server, PyMySQL, charset utf8mb4).
-- MySQL has no transactional DDL, so Django prints no BEGIN and COMMIT; InnoDB indexes each foreign
-- key itself (the index takes the constraint's name), so Django adds no CREATE INDEX. The tables
-- take the database's character set and collation; MariaDB makes `json` a longtext that must pass
-- JSON_VALID.
--
-- Create model API
--
CREATE TABLE `apiMetrics_api` (`id` bigint AUTO_INCREMENT NOT NULL PRIMARY KEY, `name` varchar(200) NOT NULL, `description` longtext NOT NULL, `params` json NOT NULL);
--
-- Create model TransactionStatus
--
CREATE TABLE `apiMetrics_transactionstatus` (`id` bigint AUTO_INCREMENT NOT NULL PRIMARY KEY, `name` varchar(100) NOT NULL, `description` longtext NOT NULL);
--
-- Create model Transaction
--
CREATE TABLE `apiMetrics_transaction` (`id` bigint AUTO_INCREMENT NOT NULL PRIMARY KEY, `amount` numeric(14, 2) NOT NULL, `time_created` datetime(6) NOT NULL, `time_modified` datetime(6) NOT NULL, `api_id` bigint NOT NULL, `status_id` bigint NOT NULL);
ALTER TABLE `apiMetrics_transaction` ADD CONSTRAINT `apiMetrics_transaction_api_id_ec03053f_fk_apiMetrics_api_id` FOREIGN KEY (`api_id`) REFERENCES `apiMetrics_api` (`id`);
ALTER TABLE `apiMetrics_transaction` ADD CONSTRAINT `apiMetrics_transacti_status_id_403e38e6_fk_apiMetric` FOREIGN KEY (`status_id`) REFERENCES `apiMetrics_transactionstatus` (`id`);
